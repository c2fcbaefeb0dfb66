"""MQTT <-> the core's names and message model, at the edge, once each way.

Topics and routing keys
-----------------------
RabbitMQ's MQTT plugin maps a topic to a routing key on ``amq.topic`` by replacing ``/``
with ``.`` (and ``+`` with ``*`` in filters), so a ``.`` inside a level becomes a separator
and a ``*`` inside a level becomes a wildcard. Here each level is one word, escaped
reversibly: ``%`` -> ``%25``, ``.`` -> ``%2E``, ``*`` -> ``%2A``; and a ``/`` inside an AMQP
word, which no MQTT level can hold, is shown to MQTT as ``%2F`` and maps back to ``/``.
Plain topics (no ``.``, ``*``, ``%``) map exactly as RabbitMQ maps them:
``home/kitchen/temp`` <-> ``home.kitchen.temp``.

Properties (RabbitMQ's table, docs/conversions.md, with request/response made to work with
AMQP RPC): QoS 0/1 <-> delivery-mode 1/2 (the QoS published is also kept in the header
``x-mqtt-publish-qos`` so QoS 2 is never downgraded); message expiry (s) <-> expiration (ms);
content type <-> content-type; correlation data <-> correlation-id (header
``x-correlation-id`` when not a short UTF-8 string); user properties <-> headers; response
topic <-> reply-to: a topic ``$reply/<queue>`` names an AMQP reply queue (what an AMQP
requester's ``reply_to`` is shown as), any other topic is kept in the header
``x-reply-to-topic`` and reply-to is set to the requesting session's own queue, so an AMQP
RPC server answering through the default exchange reaches the MQTT requester.
"""

from __future__ import annotations

from typing import Any, Final

from gateway.core.message import Message, Properties
from protocols.mqtt.frames import NO_PROPERTIES
from protocols.mqtt.frames import Properties as MQTTProperties

QOS_HEADER: Final = "x-mqtt-publish-qos"
REPLY_TOPIC_HEADER: Final = "x-reply-to-topic"
CORRELATION_HEADER: Final = "x-correlation-id"
# in front of RabbitMQ: the publishing client id, as a message coming back from RabbitMQ
# has lost the node's own note of it (no local subscriptions, `delivery.deliver`)
PUBLISHER_HEADER: Final = "x-mqtt-publisher"
REPLY_PREFIX: Final = "$reply/"
SHARE_PREFIX: Final = "$share/"
CACHE_KEY: Final = "mqtt"  # Message.cache: the MQTT 5 properties as published
# headers the broker adds that are not the publisher's user properties
_INTERNAL_HEADERS: Final = frozenset({
    QOS_HEADER, REPLY_TOPIC_HEADER, CORRELATION_HEADER, PUBLISHER_HEADER, "x-mqtt-dup"})


# -- names ---------------------------------------------------------------------------------

def _escape_level(level: str) -> str:
    if "." not in level and "*" not in level and "%" not in level:
        return level
    out = []
    i = 0
    while i < len(level):
        c = level[i]
        if c == "%" and level[i + 1:i + 3] == "2F":
            out.append("/")
            i += 3
            continue
        out.append({"%": "%25", ".": "%2E", "*": "%2A"}.get(c, c))
        i += 1
    return "".join(out)


def _unescape_word(word: str) -> str:
    if "%" not in word and "/" not in word:
        return word
    out = []
    i = 0
    while i < len(word):
        c = word[i]
        if c == "/":
            out.append("%2F")
        elif c == "%" and word[i + 1:i + 3] in ("25", "2E", "2A"):
            out.append({"25": "%", "2E": ".", "2A": "*"}[word[i + 1:i + 3]])
            i += 3
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)


def topic_to_routing_key(topic: str) -> str:
    """`home/kitchen/temp` -> `home.kitchen.temp`; `a.b/c` -> `a%2Eb.c`."""
    if "." not in topic and "*" not in topic and "%" not in topic:
        return topic.replace("/", ".")  # a plain topic (once per PUBLISH: kept cheap)
    return ".".join(_escape_level(level) for level in topic.split("/"))


def routing_key_to_topic(routing_key: str) -> str:
    """The inverse of `topic_to_routing_key`; an AMQP word holding `/` shows as `%2F`."""
    if "%" not in routing_key and "/" not in routing_key:
        return routing_key.replace(".", "/")
    return "/".join(_unescape_word(word) for word in routing_key.split("."))


def filter_to_binding_key(topic_filter: str) -> str:
    """`a/+/#` -> `a.*.#`; literal levels are escaped as in topics."""
    words = []
    for level in topic_filter.split("/"):
        if level == "+":
            words.append("*")
        elif level == "#":
            words.append("#")
        else:
            words.append(_escape_level(level))
    return ".".join(words)


def binding_key_to_filter(binding_key: str) -> str:
    levels = []
    for word in binding_key.split("."):
        if word == "*":
            levels.append("+")
        elif word == "#":
            levels.append("#")
        else:
            levels.append(_unescape_word(word))
    return "/".join(levels)


def valid_topic_filter(topic_filter: str) -> bool:
    """`+` and `#` only as whole levels, `#` only last, not empty [MQTT-4.7.1-1..3]."""
    if not topic_filter or "\x00" in topic_filter:
        return False
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if level == "#":
            if i != len(levels) - 1:
                return False
        elif level != "+" and ("+" in level or "#" in level):
            return False
    return True


def parse_shared(topic_filter: str) -> tuple[str | None, str]:
    """`$share/group/a/b` -> ("group", "a/b"); anything else -> (None, filter).
    A malformed share (empty group, wildcard in it, no filter) gives ("", "")."""
    if not topic_filter.startswith(SHARE_PREFIX):
        return None, topic_filter
    rest = topic_filter[len(SHARE_PREFIX):]
    group, sep, inner = rest.partition("/")
    if not sep or not group or "+" in group or "#" in group or not inner:
        return "", ""
    return group, inner


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT matching of a topic name against a filter; a topic starting with `$` is not
    matched by a filter starting with a wildcard [MQTT-4.7.2-1]."""
    if topic_filter == topic:  # a topic name holds no wildcard: the common exact case
        return True
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    for i, f in enumerate(f_levels):
        if f == "#":
            return True
        if i >= len(t_levels):
            return False
        if f != "+" and f != t_levels[i]:
            return False
    return len(f_levels) == len(t_levels)


def reply_queue(topic: str) -> str:
    """`$reply/<queue>` -> the AMQP reply queue's name."""
    return topic[len(REPLY_PREFIX):].replace("%2F", "/")


# -- messages ------------------------------------------------------------------------------

def to_core(topic: str, payload: bytes, qos: int, props: MQTTProperties, *,
            own_queue: str | None, message_id: int) -> Message:
    """The core message for an MQTT PUBLISH (or will) to amq.topic."""
    headers: dict[str, Any] = {QOS_HEADER: qos}
    for key, value in props.user_properties:
        headers[key] = value
    correlation_id = None
    if props.correlation_data is not None:
        try:
            text = props.correlation_data.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None and len(props.correlation_data) <= 255:
            correlation_id = text
        else:
            headers[CORRELATION_HEADER] = props.correlation_data
    reply_to = None
    if props.response_topic is not None:
        if props.response_topic.startswith(REPLY_PREFIX):
            reply_to = reply_queue(props.response_topic)
        else:
            headers[REPLY_TOPIC_HEADER] = topic_to_routing_key(props.response_topic)
            reply_to = own_queue
    core_props = Properties(
        content_type=props.content_type,
        headers=headers,
        delivery_mode=2 if qos else 1,
        correlation_id=correlation_id,
        reply_to=reply_to,
        expiration=(str(props.message_expiry_interval * 1000)
                    if props.message_expiry_interval is not None else None),
    )
    message = Message(message_id, "amq.topic", topic_to_routing_key(topic), core_props,
                      payload, "mqtt")
    if props is not NO_PROPERTIES:
        message.cache[CACHE_KEY] = props
    return message


def published_qos(message: Message) -> int:
    """The QoS the message was published with: the MQTT header, else delivery mode."""
    headers = message.properties.headers
    if headers:
        q = headers.get(QOS_HEADER)
        if isinstance(q, int) and not isinstance(q, bool) and 0 <= q <= 2:
            return q
    return 1 if message.persistent else 0


def _header_text(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None  # tables, arrays, timestamps: dropped, as RabbitMQ does


def from_core(message: Message) -> MQTTProperties:
    """The MQTT 5 properties of a core message (without subscription ids and alias)."""
    cached = message.cache.get(CACHE_KEY)
    if isinstance(cached, MQTTProperties):
        return cached
    p = message.properties
    headers = p.headers or {}
    users = []
    for key, value in headers.items():
        if key in _INTERNAL_HEADERS or key.startswith("x-death") or key.startswith(
                ("x-first-death", "x-last-death")):
            continue
        text = _header_text(value)
        if text is not None:
            users.append((str(key), text))
    correlation: bytes | None = None
    raw = headers.get(CORRELATION_HEADER)
    if isinstance(raw, bytes):
        correlation = raw
    elif p.correlation_id is not None:
        correlation = p.correlation_id.encode("utf-8")
    response_topic = None
    reply_rk = headers.get(REPLY_TOPIC_HEADER)
    if isinstance(reply_rk, bytes):
        reply_rk = reply_rk.decode("utf-8", "replace")
    if isinstance(reply_rk, str):
        response_topic = routing_key_to_topic(reply_rk)
    elif p.reply_to:
        response_topic = REPLY_PREFIX + p.reply_to.replace("/", "%2F")
    expiry = None
    ttl = message.ttl_ms()
    if ttl is not None:
        expiry = (ttl + 999) // 1000
    props = MQTTProperties(
        content_type=p.content_type,
        correlation_data=correlation,
        response_topic=response_topic,
        message_expiry_interval=expiry,
        user_properties=tuple(users),
    )
    if props == NO_PROPERTIES:
        props = NO_PROPERTIES
    message.cache[CACHE_KEY] = props
    return props
