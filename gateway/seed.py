"""A config file's users as RabbitMQ definitions JSON, to apply them to a data directory
that already holds users.

The `[[users]]`, `[[vhosts]]` and `[[permissions]]` of a config seed a fresh data directory
only (as RabbitMQ creates its default user on first boot); later edits of them change
nothing, since the store is then the source of truth. To apply them to a running broker:

    python -m gateway.seed my-gateway.toml | gateway ctl import_definitions -

(or write the output to a file and name it in `[definitions] file`, which imports it,
merged, at every start). Users are created or updated with the config's password hashes
and tags; nothing is deleted.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.auth.passwords import hashing_algorithm
from gateway.config import AuthConfig, ConfigError, load_config


def definitions(auth: AuthConfig) -> dict[str, Any]:
    """The users, vhosts and permissions of a config, in definitions JSON's shape."""
    return {
        "users": [{"name": u.name, "password_hash": u.password_hash,
                   "hashing_algorithm": hashing_algorithm(u.password_hash),
                   "tags": list(u.tags)} for u in auth.users],
        "vhosts": [{"name": v} for v in auth.vhosts],
        "permissions": [{"user": p.user, "vhost": p.vhost, "configure": p.configure,
                         "write": p.write, "read": p.read} for p in auth.permissions],
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m gateway.seed CONFIG.toml", file=sys.stderr)
        return 64
    try:
        config = load_config(Path(args[0]))
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    json.dump(definitions(config.auth), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
