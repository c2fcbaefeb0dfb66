# gateway broker image: `docker compose up` (see docker-compose.yml) or
#   docker build -t gateway . && docker run -p 5672:5672 -v gateway-data:/var/lib/gateway gateway
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY protocols ./protocols
RUN pip install . && rm -rf /src

# Inside a container every client arrives from a non-loopback address (the published port
# goes through Docker's bridge), so the image lets `guest` log in from anywhere, as
# RabbitMQ's official image does. This file is merged over the embedded default config;
# mount your own over it (or pass --config) to change users and permissions.
RUN mkdir -p /etc/gateway \
    && printf '[auth]\nloopback_users = []\n' > /etc/gateway/gateway.toml \
    && useradd --system --home-dir /var/lib/gateway --shell /usr/sbin/nologin gateway \
    && mkdir -p /var/lib/gateway \
    && chown gateway:gateway /var/lib/gateway

USER gateway
WORKDIR /var/lib/gateway
VOLUME /var/lib/gateway

# AMQP, MQTT, STOMP, HTTP (management)
EXPOSE 5672 1883 61613 15672

STOPSIGNAL SIGTERM
CMD ["gateway", "serve", "--config", "/etc/gateway/gateway.toml", "--host", "0.0.0.0", "--data-dir", "/var/lib/gateway"]
