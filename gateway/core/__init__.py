"""The routing core: Broker -> VirtualHost -> Exchange, Queue, Binding, Consumer, Message.

Synchronous and deterministic: no I/O, no awaits, no clock reads, no protocol knowledge."""
