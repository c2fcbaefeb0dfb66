"""Management: RabbitMQ's HTTP API, the web UI, Prometheus metrics and the message trace,
served by the `http` listener, which hands it `gateway.web` requests."""
