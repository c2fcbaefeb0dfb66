"""MQTT 3.1.1 and 5.0 front: codec, session and mapping onto the routing core."""
