# gateway broker image: `docker compose up` (see docker-compose.yml) or
#   docker build -t gateway .
#   docker run -e GATEWAY_DEFAULT_USER=admin -e GATEWAY_DEFAULT_PASS=change-me \
#       -p 5672:5672 -p 15672:15672 -v gateway-data:/var/lib/gateway gateway
# Without GATEWAY_DEFAULT_USER/GATEWAY_DEFAULT_PASS (RABBITMQ_DEFAULT_USER/_PASS work too)
# only `guest` exists and it may log in from inside the container only (loopback), as on
# RabbitMQ; the broker refuses to start if a mounted config opens guest/guest or anonymous
# administrator logins to other addresses (gateway/container.py). See docs/operations.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Dependencies pinned with their hashes (requirements.lock, from `pip-compile
# --generate-hashes`; see its header), then the package itself without resolving anything.
COPY requirements.lock ./
RUN pip install --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY protocols ./protocols
RUN pip install --no-deps --no-build-isolation . && rm -rf /src

# The config file `gateway serve` reads, merged over the embedded default (conf/gateway.toml):
# mount your own over it to change listeners, limits or users.
RUN mkdir -p /etc/gateway \
    && printf '# merged over the defaults; mount your own config here\n' \
       > /etc/gateway/gateway.toml \
    && useradd --system --home-dir /var/lib/gateway --shell /usr/sbin/nologin gateway \
    && mkdir -p /var/lib/gateway \
    && chown gateway:gateway /var/lib/gateway

USER gateway
WORKDIR /var/lib/gateway
VOLUME /var/lib/gateway

# Listening by default: AMQP 5672, MQTT 1883, STOMP 61613, HTTP 15672 (management API, web
# UI, /metrics, and WebSocket on /ws for WAMP, MQTT and STOMP).
EXPOSE 5672 1883 61613 15672
# Off by default, turned on in the mounted config ([listeners]; the TLS ones need [tls]):
# Web-STOMP 15674 and Web-MQTT 15675 (WebSocket, path /ws); AMQPS 5671, MQTTS 8883,
# STOMPS 61614, HTTPS 15671 (wss on /ws), Web-STOMP over TLS 15673, Web-MQTT over TLS 15676.
EXPOSE 15674 15675 5671 8883 61614 15671 15673 15676

# Healthy when the AMQP listener greets a protocol header (or, with AMQP off, the HTTP
# listener answers): no credentials needed.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "-m", "gateway.container", "healthcheck", "/etc/gateway/gateway.toml"]

STOPSIGNAL SIGTERM
CMD ["python", "-m", "gateway.container", "serve", "--config", "/etc/gateway/gateway.toml", "--host", "0.0.0.0", "--data-dir", "/var/lib/gateway"]
