"""Policies: queue and exchange settings applied by name pattern, as `rabbitmqctl
set_policy` sets them.

A policy has a name, a regex searched in queue/exchange names, a definition (a table of
keys such as `message-ttl` or `dead-letter-exchange`), a priority and what it applies to
(`queues`, `exchanges` or `all`). Of the policies matching an object, only the one with
the highest priority applies (ties: the name that sorts first), as in RabbitMQ. Its keys
act like the matching `x-` arguments, but an object's own arguments win over them.

`max-priority` and `single-active-consumer` are not policy keys in RabbitMQ (they fix a
queue's structure at declare); keys RabbitMQ knows but this broker does not act on
(mirroring, queue modes, streams, federation; `delivery-limit` and `dead-letter-strategy`
act on quorum queues only) are accepted and ignored so a RabbitMQ
definitions export imports cleanly; any other key is refused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Final

from gateway.core import bounded_regex
from gateway.core.errors import PreconditionFailed
from gateway.core.queue_args import QueueArgs

log = logging.getLogger("gateway.policy")

# seconds one policy pattern may search one name: patterns come from policymakers, who
# are not administrators, and are searched in the event loop (gateway/core/bounded_regex.py)
MATCH_TIMEOUT: Final = 0.05

APPLY_TO = ("queues", "exchanges", "all", "classic_queues")

# policy key -> the queue argument it stands for
QUEUE_KEYS = {
    "message-ttl": "x-message-ttl",
    "expires": "x-expires",
    "max-length": "x-max-length",
    "max-length-bytes": "x-max-length-bytes",
    "overflow": "x-overflow",
    "dead-letter-exchange": "x-dead-letter-exchange",
    "dead-letter-routing-key": "x-dead-letter-routing-key",
    # quorum queues only (a classic queue ignores them, as in RabbitMQ)
    "delivery-limit": "x-delivery-limit",
    "dead-letter-strategy": "x-dead-letter-strategy",
    "consumer-timeout": "x-consumer-timeout",
}
EXCHANGE_KEYS = {"alternate-exchange": "alternate-exchange"}

# RabbitMQ policy keys accepted for compatibility and not acted on
IGNORED_KEYS = frozenset({
    "ha-mode", "ha-params", "ha-sync-mode", "ha-sync-batch-size", "ha-promote-on-shutdown",
    "ha-promote-on-failure", "queue-mode", "queue-version", "queue-master-locator",
    "queue-leader-locator", "max-age",
    "stream-max-segment-size-bytes", "initial-cluster-size", "target-group-size",
    "max-in-memory-length", "max-in-memory-bytes", "federation-upstream",
    "federation-upstream-set",
})


@dataclass(frozen=True)
class Policy:
    name: str
    pattern: str
    definition: dict[str, Any]
    priority: int = 0
    apply_to: str = "queues"
    regex: bounded_regex.Pattern = field(compare=False, repr=False,
                                         default=bounded_regex.compile_bounded(""))
    # set when the pattern once ran out of time: from then on it matches nothing, so a
    # policy applied to every queue of a vhost stalls the loop MATCH_TIMEOUT once at most
    ran_out: list[bool] = field(compare=False, repr=False, default_factory=list)

    @staticmethod
    def make(name: str, pattern: str, definition: dict[str, Any], priority: int = 0,
             apply_to: str = "queues") -> Policy:
        """A validated policy; `PreconditionFailed` names what is wrong."""
        if not isinstance(name, str) or not name:
            raise PreconditionFailed("policy name must be a non-empty string")
        if not isinstance(pattern, str):
            raise PreconditionFailed(f"policy '{name}': pattern must be a string")
        try:
            regex = bounded_regex.compile_bounded(pattern)
        except bounded_regex.PatternError as exc:
            raise PreconditionFailed(f"policy '{name}': invalid pattern {pattern!r}: "
                                     f"{exc}") from None
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise PreconditionFailed(f"policy '{name}': priority must be an integer")
        if apply_to not in APPLY_TO:
            raise PreconditionFailed(f"policy '{name}': apply-to must be one of queues, "
                                     f"exchanges, all; got {apply_to!r}")
        if not isinstance(definition, dict) or not definition:
            raise PreconditionFailed(f"policy '{name}': definition must be a non-empty "
                                     "table")
        unknown = sorted(k for k in definition
                         if k not in QUEUE_KEYS and k not in EXCHANGE_KEYS
                         and k not in IGNORED_KEYS)
        if unknown:
            raise PreconditionFailed(f"policy '{name}': unrecognised definition keys "
                                     f"{', '.join(unknown)}")
        # validated as the queue arguments they stand for
        QueueArgs(queue_arguments(definition))
        ae = definition.get("alternate-exchange")
        if ae is not None and not isinstance(ae, str):
            raise PreconditionFailed(f"policy '{name}': alternate-exchange must be a string")
        return Policy(name, pattern, dict(definition), priority, apply_to, regex)

    def applies_to(self, kind: str, name: str) -> bool:
        if kind == "queues":
            if self.apply_to not in ("queues", "all", "classic_queues"):
                return False
        elif self.apply_to not in ("exchanges", "all"):
            return False
        if self.ran_out:
            return False
        try:
            return bounded_regex.search(self.regex, name, MATCH_TIMEOUT)
        except TimeoutError:
            self.ran_out.append(True)
            log.warning("policy '%s': pattern %r took more than %g s on %r (it backtracks "
                        "too much): the policy applies to nothing until it is set again",
                        self.name, self.pattern, MATCH_TIMEOUT, name)
            return False


def queue_arguments(definition: dict[str, Any]) -> dict[str, Any]:
    """The `x-` queue arguments a policy definition stands for."""
    return {QUEUE_KEYS[k]: v for k, v in definition.items() if k in QUEUE_KEYS}


def select(policies: dict[str, Policy], kind: str, name: str) -> Policy | None:
    """The policy that applies to the queue or exchange `name`, if any."""
    best: Policy | None = None
    for p in policies.values():
        if p.applies_to(kind, name) and (
            best is None or p.priority > best.priority
            or (p.priority == best.priority and p.name < best.name)
        ):
            best = p
    return best
