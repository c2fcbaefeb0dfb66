"""Queue arguments: which ones exist, which queue type takes which, and their checks.

This follows RabbitMQ 4's `rabbit_amqqueue:check_declare_arguments/3`:

1. `x-queue-type` must name a known type (`classic`, `quorum`, `stream`); any other value
   is refused with 406 "unsupported queue type".
2. Each argument the queue's type takes is checked for its type and range; a bad one is
   refused with 406 "invalid arg 'x-...' for queue 'q' in vhost 'v': {reason,...}", the
   reason written as RabbitMQ writes it (`{value_negative,-1}`, `{unacceptable_type,longstr}`).
3. An argument RabbitMQ knows but that belongs to *another* queue type (the union of every
   type's `capabilities()` minus this type's own) is refused with 406 "invalid arg 'x-...'
   for queue 'q' in vhost 'v' of queue type rabbit_classic_queue".
4. Anything else (a client's own keys, arguments of plugins this broker does not have) is
   accepted and ignored; `unsupported()` names them so the queue can log them once and the
   management API can show them.

`QueueArgs` is what the core acts on, read from a queue's arguments merged with its policy.
"""

from __future__ import annotations

import re
from typing import Any, Final

from gateway.core.errors import PreconditionFailed

QUEUE_TYPES: Final = ("classic", "quorum", "stream")
# RabbitMQ's module names, used in its "of queue type ..." messages
TYPE_MODULES: Final = {"classic": "rabbit_classic_queue", "quorum": "rabbit_quorum_queue",
                       "stream": "rabbit_stream_queue"}

# the `queue_arguments` of each type's capabilities() in RabbitMQ 4
CLASSIC_ARGS: Final = frozenset({
    "x-expires", "x-message-ttl", "x-dead-letter-exchange", "x-dead-letter-routing-key",
    "x-max-length", "x-max-length-bytes", "x-max-priority", "x-overflow", "x-queue-mode",
    "x-queue-version", "x-single-active-consumer", "x-queue-type", "x-queue-master-locator",
    "x-queue-leader-locator",
})
QUORUM_ARGS: Final = frozenset({
    "x-dead-letter-exchange", "x-dead-letter-routing-key", "x-dead-letter-strategy",
    "x-expires", "x-max-length", "x-max-length-bytes", "x-max-in-memory-length",
    "x-max-in-memory-bytes", "x-overflow", "x-single-active-consumer", "x-queue-type",
    "x-quorum-initial-group-size", "x-delivery-limit", "x-message-ttl",
    "x-queue-leader-locator",
})
STREAM_ARGS: Final = frozenset({
    "x-max-length-bytes", "x-queue-type", "x-max-age", "x-stream-max-segment-size-bytes",
    "x-stream-filter-size-bytes", "x-initial-cluster-size", "x-queue-leader-locator",
})
TYPE_ARGS: Final = {"classic": CLASSIC_ARGS, "quorum": QUORUM_ARGS, "stream": STREAM_ARGS}
KNOWN_ARGS: Final = CLASSIC_ARGS | QUORUM_ARGS | STREAM_ARGS

# arguments a type takes that only place replicas or tune memory in a cluster: on one node
# they have no effect (nor do they in RabbitMQ 4 on a single node)
NO_EFFECT_ARGS: Final = frozenset({
    "x-queue-mode", "x-queue-version", "x-queue-master-locator", "x-queue-leader-locator",
    "x-quorum-initial-group-size", "x-max-in-memory-length", "x-max-in-memory-bytes",
})

OVERFLOW_MODES: Final = ("drop-head", "reject-publish", "reject-publish-dlx")
QUEUE_MODES: Final = ("default", "lazy")
DLX_STRATEGIES: Final = ("at-most-once", "at-least-once")
LEADER_LOCATORS: Final = ("client-local", "balanced")
MAX_PRIORITY: Final = 255
MAX_EXPIRY: Final = 315_360_000_000  # ten years in milliseconds, rabbit_misc:check_expiry
# RabbitMQ 4's default x-delivery-limit for quorum queues (rabbit_quorum_queue.erl)
DEFAULT_DELIVERY_LIMIT: Final = 20
_MAX_AGE = re.compile(r"^([0-9]+)(Y|M|D|h|m|s)$")
_MAX_AGE_MS: Final = {"Y": 365 * 86_400_000, "M": 30 * 86_400_000, "D": 86_400_000,
                      "h": 3_600_000, "m": 60_000, "s": 1000}


def amqp_type(value: Any) -> str:
    """The AMQP 0-9-1 field type RabbitMQ names in its messages for a decoded value."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "longstr"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, list):
        return "array"
    if isinstance(value, bytes):
        return "binary"
    if value is None:
        return "void"
    return "timestamp"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(value: Any) -> str | None:
    if not _is_int(value):
        return f'"expected integer, got {amqp_type(value)}"'
    return None


def _non_neg(value: Any) -> str | None:
    err = _int(value)
    if err is None and value < 0:
        return f"{{value_negative,{value}}}"
    return err


def _expiry(value: Any) -> str | None:
    err = _non_neg(value)
    if err is None and value > MAX_EXPIRY:
        return f"{{value_too_large,{value}}}"
    return err


def _expires(value: Any) -> str | None:
    if _is_int(value) and value == 0:
        return "{value_zero,0}"
    return _expiry(value)


def _positive(value: Any) -> str | None:
    if _is_int(value) and value == 0:
        return "{value_zero,0}"
    return _non_neg(value)


def _max_priority(value: Any) -> str | None:
    err = _non_neg(value)
    if err is None and value > MAX_PRIORITY:
        return f"{{max_value_exceeded,{value}}}"
    return err


def _bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"{{unacceptable_type,{amqp_type(value)}}}"


def _one_of(choices: tuple[str, ...], reason: str) -> Any:
    def check(value: Any) -> str | None:
        if not isinstance(value, str):
            return f"{{unacceptable_type,{amqp_type(value)}}}"
        return None if value in choices else reason.format(value)
    return check


def _string(value: Any) -> str | None:
    return None if isinstance(value, str) else f"{{unacceptable_type,{amqp_type(value)}}}"


def _delivery_limit(value: Any) -> str | None:
    # RabbitMQ 4: any integer; a negative one means no limit
    return _int(value)


def max_age_ms(value: str) -> int | None:
    """`x-max-age` ("7D", "1h", "30m", "10s", "1Y", "2M") in milliseconds, or None."""
    m = _MAX_AGE.match(value)
    if m is None or int(m.group(1)) <= 0:
        return None
    return int(m.group(1)) * _MAX_AGE_MS[m.group(2)]


def _max_age(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"{{unacceptable_type,{amqp_type(value)}}}"
    return None if max_age_ms(value) is not None else "invalid_max_age"


def _queue_version(value: Any) -> str | None:
    err = _non_neg(value)
    if err is None and value not in (1, 2):
        return f"\"unsupported queue version '{value}'\""
    return err


VALIDATORS: Final = {
    "x-expires": _expires,
    "x-message-ttl": _expiry,
    "x-dead-letter-exchange": _string,
    "x-dead-letter-routing-key": _string,
    "x-dead-letter-strategy": _one_of(DLX_STRATEGIES, "invalid_dlx_strategy"),
    "x-max-length": _non_neg,
    "x-max-length-bytes": _non_neg,
    "x-max-in-memory-length": _non_neg,
    "x-max-in-memory-bytes": _non_neg,
    "x-max-priority": _max_priority,
    "x-overflow": _one_of(OVERFLOW_MODES, "invalid_overflow"),
    "x-queue-mode": _one_of(QUEUE_MODES, "\"unsupported queue mode '{}'\""),
    "x-queue-version": _queue_version,
    "x-single-active-consumer": _bool,
    "x-quorum-initial-group-size": _positive,
    "x-delivery-limit": _delivery_limit,
    "x-max-age": _max_age,
    "x-stream-max-segment-size-bytes": _non_neg,
    "x-stream-filter-size-bytes": _non_neg,
    "x-initial-cluster-size": _positive,
    "x-queue-leader-locator": _one_of(LEADER_LOCATORS, "invalid_queue_locator_arg"),
    "x-consumer-timeout": _non_neg,
}
# acted on for every queue type, though no type's capabilities() lists it in RabbitMQ 4.0
# (its channel reads it with the `consumer-timeout` policy key): checked, never refused
ANY_TYPE_ARGS: Final = frozenset({"x-consumer-timeout"})


def queue_type(args: dict[str, Any]) -> str:
    """The queue type the arguments ask for ("classic" when none)."""
    value = args.get("x-queue-type")
    if value is None or value in ("", "undefined"):
        return "classic"
    return str(value)


def validate(args: dict[str, Any], where: str = "queue") -> str:
    """Check declare arguments as RabbitMQ does; returns the queue type. `where` names the
    queue in messages ("queue 'q' in vhost '/'")."""
    value = args.get("x-queue-type")
    if value is not None and value not in ("", "undefined"):
        if not isinstance(value, str):
            raise PreconditionFailed(f"PRECONDITION_FAILED - invalid arg 'x-queue-type' for "
                                     f"{where}: {{unacceptable_type,{amqp_type(value)}}}")
        if value not in QUEUE_TYPES:
            raise PreconditionFailed(f"PRECONDITION_FAILED - invalid arg 'x-queue-type' for "
                                     f"{where}: \"unsupported queue type '{value}'\"")
    qtype = queue_type(args)
    own = TYPE_ARGS[qtype]
    for key in sorted((own | ANY_TYPE_ARGS) & args.keys()):
        check = VALIDATORS.get(key)
        err = None if check is None else check(args[key])
        if err is None and key == "x-dead-letter-routing-key" \
                and "x-dead-letter-exchange" not in args:
            err = "routing_key_but_no_dlx_defined"
        if err is not None:
            raise PreconditionFailed(f"PRECONDITION_FAILED - invalid arg '{key}' for {where}: "
                                     f"{err}")
    for key in args:
        if key in KNOWN_ARGS and key not in own:
            raise PreconditionFailed(f"PRECONDITION_FAILED - invalid arg '{key}' for {where} "
                                     f"of queue type {TYPE_MODULES[qtype]}")
    return qtype


def unsupported(args: dict[str, Any]) -> list[str]:
    """The arguments this broker accepts and does not act on, as RabbitMQ ignores arguments
    it does not know: a client's own keys and other plugins' arguments."""
    return sorted(k for k in args if k not in KNOWN_ARGS and k not in ANY_TYPE_ARGS)


class QueueArgs:
    """The queue arguments the core acts on, validated once at declare (the queue's own)
    and whenever a policy changes (merged with the policy's keys)."""

    __slots__ = ("message_ttl", "expires", "max_length", "max_length_bytes", "overflow",
                 "dlx", "dlrk", "max_priority", "single_active_consumer", "delivery_limit",
                 "dlx_strategy", "consumer_timeout")

    def __init__(self, args: dict[str, Any], qtype: str = "classic") -> None:
        where = "queue"
        for key in sorted(args.keys() & VALIDATORS.keys()):
            err = VALIDATORS[key](args[key])
            if err is not None:
                raise PreconditionFailed(f"PRECONDITION_FAILED - invalid arg '{key}' for "
                                         f"{where}: {err}")
        self.message_ttl: int | None = args.get("x-message-ttl")
        self.expires: int | None = args.get("x-expires")
        self.max_length: int | None = args.get("x-max-length")
        self.max_length_bytes: int | None = args.get("x-max-length-bytes")
        self.max_priority: int | None = args.get("x-max-priority") if qtype == "classic" \
            else None
        overflow: str = args.get("x-overflow", "drop-head")
        if qtype == "quorum" and overflow == "reject-publish-dlx":
            # RabbitMQ 4 (rabbit_quorum_queue:overflow/3) warns and uses drop-head
            overflow = "drop-head"
        self.overflow = overflow
        dlx = args.get("x-dead-letter-exchange")
        dlrk = args.get("x-dead-letter-routing-key")
        if dlrk is not None and dlx is None:
            raise PreconditionFailed("PRECONDITION_FAILED - invalid arg "
                                     "'x-dead-letter-routing-key' for queue: "
                                     "routing_key_but_no_dlx_defined")
        self.dlx: str | None = dlx
        self.dlrk: str | None = dlrk
        self.single_active_consumer: bool = args.get("x-single-active-consumer", False)
        limit: int | None = None
        if qtype == "quorum":
            limit = args.get("x-delivery-limit", DEFAULT_DELIVERY_LIMIT)
            if limit is not None and limit < 0:
                limit = None  # RabbitMQ 4: a negative limit is no limit
        self.delivery_limit = limit
        self.dlx_strategy: str = args.get("x-dead-letter-strategy", "at-most-once")
        # ms a delivery may stay unacknowledged (None: the [amqp] consumer_timeout)
        self.consumer_timeout: int | None = args.get("x-consumer-timeout")
