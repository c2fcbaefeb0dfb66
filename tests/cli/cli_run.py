"""Running `gateway ...` as a user does: a child process, its exit code and output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def env() -> dict[str, str]:
    """The environment of the tests, with this checkout importable from any directory and
    no ctl credentials inherited."""
    path = os.environ.get("PYTHONPATH", "")
    variables = {**os.environ, "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{path}" if path
                 else str(REPO_ROOT)}
    for name in ("GATEWAY_USER", "GATEWAY_PASSWORD"):
        variables.pop(name, None)
    return variables


def gateway(*args: str, cwd: Path = REPO_ROOT, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=cwd, env=env(),
                          capture_output=True, text=True, timeout=60, **kwargs)


def as_other_user(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    """`as_other_user.py ARGS` (root only): the command run as `nobody`."""
    assert os.geteuid() == 0
    return subprocess.run([sys.executable, str(HERE / "as_other_user.py"), *args], cwd=cwd,
                          env=env(), capture_output=True, text=True, timeout=60)


def rows(out: str) -> list[list[str]]:
    return [line.split("\t") for line in out.splitlines() if line]
