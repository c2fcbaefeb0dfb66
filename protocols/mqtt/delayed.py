"""MQTT's delayed publish, EMQX's convention: a PUBLISH to `$delayed/SECONDS/topic` is held
by the vhost (`gateway.core.delayed`) and published to `topic` SECONDS later.

As EMQX's `emqx_delayed:on_message_publish/1` reads it: SECONDS is a decimal integer; under
`MAX_INTERVAL` it is a delay in seconds, from `MAX_INTERVAL` on a Unix time in seconds to
publish at, refused when that is more than `MAX_INTERVAL` seconds away. A delay that is not
positive (or a time already past) publishes at once. No I/O here.
"""

from __future__ import annotations

import re

PREFIX = "$delayed/"
MAX_INTERVAL = 4294967  # seconds, EMQX's ?MAX_INTERVAL
_INTEGER = re.compile(r"[+-]?[0-9]{1,20}")


class DelayedTopicError(ValueError):
    """A `$delayed/` topic that cannot be delayed; the text says why."""


def parse(topic: str, now: float) -> tuple[int, str]:
    """(delay in ms, the topic to publish to) of a topic starting with `PREFIX`; the delay
    is 0 or less for at once. Raises `DelayedTopicError`."""
    rest = topic[len(PREFIX):]
    interval, sep, target = rest.partition("/")
    if not sep or not target:
        raise DelayedTopicError(f"'{topic}': no topic after $delayed/SECONDS/")
    if "+" in target or "#" in target:
        raise DelayedTopicError(f"'{topic}': wildcards in the topic name")
    if not _INTEGER.fullmatch(interval):
        raise DelayedTopicError(f"'{topic}': delay interval '{interval}' is not an integer")
    seconds = int(interval)
    if seconds < MAX_INTERVAL:
        return seconds * 1000, target
    # from MAX_INTERVAL on: a Unix time (s) to publish at
    delay = seconds - now
    if delay > MAX_INTERVAL:
        raise DelayedTopicError(f"'{topic}': delay interval more than {MAX_INTERVAL} "
                                "seconds away")
    return int(delay * 1000), target
