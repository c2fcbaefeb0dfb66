"""The atheris side of every fuzz target: instrument the project's code (and the wire
libraries it builds on), then hand libFuzzer one `check_*` entry from `oracles.py`.

Each `fuzz_<codec>.py` is `run("<codec>")`; the arguments are libFuzzer's, e.g.

    .venv/bin/python fuzz/fuzz_amqp.py fuzz/corpus/amqp -max_len=4096 -runs=1000000

Any exception escaping an entry is a crash: libFuzzer stops and writes the input to
`crash-<sha1>` (turn it into a regression test under tests/fuzz/).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

INSTRUMENTED = ["protocols", "gateway", "pamqp", "msgpack", "h11", "wsproto", "oracles",
                "ws_oracle"]


def entry(name: str) -> Callable[[bytes], None]:
    import oracles

    if name == "websocket":
        import ws_oracle

        return ws_oracle.check_websocket
    return {"amqp": oracles.check_amqp, "mqtt": oracles.check_mqtt,
            "stomp": oracles.check_stomp, "wamp": oracles.check_wamp_any}[name]


def run(name: str) -> None:
    import atheris

    with atheris.instrument_imports(include=INSTRUMENTED):
        check = entry(name)
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()
