"""Write the seed corpora of the atheris targets: one file per valid input in `seeds.py`.

    .venv/bin/python fuzz/make_corpus.py [DIR]     (default: fuzz/corpus)

The corpora are generated, not kept in the repository; libFuzzer adds what it finds.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import seeds


def corpora() -> dict[str, list[bytes]]:
    out = {"amqp": seeds.amqp_seeds(), "mqtt": seeds.mqtt_seeds(),
           "stomp": seeds.stomp_seeds(),
           "wamp": seeds.wamp_seeds(binary=False) + seeds.wamp_seeds(binary=True)}
    try:
        import ws_oracle
    except ImportError:
        return out
    out["websocket"] = ws_oracle.seeds()
    return out


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "corpus"
    for name, inputs in corpora().items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for data in inputs:
            (folder / hashlib.sha1(data).hexdigest()).write_bytes(data)
        print(f"{name}: {len(inputs)} seeds in {folder}")


if __name__ == "__main__":
    main()
