"""Hypothesis settings of the fuzz tests: derandomized and without an example database, so
a run in CI tries exactly what a run here tries; no deadline (sessions do real work).

Importing it also puts the repository's `fuzz/` folder on the import path: the tests share
their oracles with the atheris targets there (oracles.py, ws_oracle.py, seeds.py). Every
test file imports this module first (it sorts first), and a conftest.py here would shadow
the one in tests/ for `from conftest import ...`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

FUZZ_DIR = str(Path(__file__).resolve().parents[2] / "fuzz")
if FUZZ_DIR not in sys.path:
    sys.path.insert(0, FUZZ_DIR)


def fuzz(max_examples: int) -> Any:
    return settings(max_examples=max_examples, deadline=None, derandomize=True,
                    database=None, suppress_health_check=[HealthCheck.too_slow,
                                                          HealthCheck.data_too_large])


EDIT = st.tuples(st.sampled_from(["flip", "insert", "delete", "dup"]), st.integers(0, 2**16),
                 st.integers(0, 255))


def mutate(data: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    """`data` with a few byte edits: set, insert, delete, or repeat a short run."""
    out = bytearray(data)
    for action, where, value in edits:
        where %= len(out) + 1
        if action == "insert":
            out[where:where] = bytes([value])
        elif action == "dup":
            out[where:where] = out[where:where + value % 16]
        elif where < len(out):
            if action == "flip":
                out[where] = value
            else:
                del out[where]
    return bytes(out)
