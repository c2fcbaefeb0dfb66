"""Regular expressions that a user who is not an administrator hands the broker.

A policymaker's policy pattern and a management user's `use_regex` name filter are
searched in the event loop, where a pattern that backtracks catastrophically (`(a|aa)+$`
against a long name) would stall every connection of every protocol. So such patterns are
compiled here with two bounds, and searched with a time limit:

- the pattern's length (`MAX_LENGTH`), and the product of its counted repetitions
  (`{n}`, `{n,m}`; `MAX_REPEATS`): the `regex` module expands those when it compiles, and
  its compile has no time limit (`(?:a{65535}){65535}` would not finish);
- every search takes a `timeout` (the `regex` module checks it every so often, so a search
  may run a few times longer, never unboundedly).

The `regex` module, not `re`, because `re` has no timeout; without flags it reads patterns
as `re` does.
"""

from __future__ import annotations

from typing import Final

import regex

MAX_LENGTH: Final = 1000  # characters of a pattern
MAX_REPEATS: Final = 100_000  # the product of its counted repetitions
_COUNTED: Final = regex.compile(r"\{(\d+)(?:,(\d*))?\}")

Pattern = regex.Pattern[str]


class PatternError(ValueError):
    """A pattern refused before it is used; the text says why."""


def compile_bounded(pattern: str) -> Pattern:
    """`pattern` compiled, or `PatternError` if it is too long, repeats too much or is not
    a regular expression."""
    if len(pattern) > MAX_LENGTH:
        raise PatternError(f"regex longer than {MAX_LENGTH} characters")
    repeats = 1
    for low, high in _COUNTED.findall(pattern):
        repeats *= max(int(low), int(high or 0)) or 1
        if repeats > MAX_REPEATS:
            raise PatternError("regex repeats too much (its counted repetitions multiply "
                               f"to more than {MAX_REPEATS})")
    try:
        return regex.compile(pattern)
    except (regex.error, OverflowError, RecursionError) as exc:
        raise PatternError(f"bad regex: {exc}") from None


def search(compiled: Pattern, text: str, timeout: float) -> bool:
    """Whether `compiled` is found in `text`; `TimeoutError` past `timeout` seconds."""
    if timeout <= 0:
        raise TimeoutError
    return compiled.search(text, timeout=timeout) is not None
