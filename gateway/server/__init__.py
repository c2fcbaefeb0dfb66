"""The I/O layer: trio listeners and connections around the sans-IO protocol sessions."""
