"""The code keeps the shape docs/architecture.md draws.

The import layers (server above protocols above core above store; sans-IO codecs; a core
without I/O) are import-linter contracts in pyproject.toml, run by `make test`
(`lint-imports`) and here, so a plain pytest run catches an upward import too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def contracts() -> list[dict[str, object]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    found: list[dict[str, object]] = config["tool"]["importlinter"]["contracts"]
    return found


def test_the_layers_are_contracts() -> None:
    layers = [c for c in contracts() if c["type"] == "layers"]
    assert [c["layers"] for c in layers] == [
        ["gateway.server", "protocols", "gateway.core", "gateway.store"]]
    forbidden = {tuple(c["source_modules"]): set(c["forbidden_modules"])  # type: ignore[call-overload]
                 for c in contracts() if c["type"] == "forbidden"}
    assert forbidden[("gateway.core",)] >= {"trio", "socket", "protocols", "gateway.server"}
    codecs = next(src for src in forbidden if "protocols.mqtt.codec" in src)
    assert forbidden[codecs] >= {"trio", "gateway"}


def test_every_contract_is_kept() -> None:
    # in a process of its own (import-linter reconfigures logging), on this tree's packages
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    run = subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports; "
         "raise SystemExit(lint_imports(no_cache=True, no_logo=True))"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
