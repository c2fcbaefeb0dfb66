"""Helpers for the durability tests: a broker and an auth service on one real DiskStore,
started as the server starts them (recover, seed or restore auth, restore the broker)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.helpers import flush

from gateway.auth.service import AuthService
from gateway.config import load_config
from gateway.core.broker import Broker
from gateway.store.disk import DiskStore


def start(data_dir: Path, config_path: Path | None = None, now: float = 0.0
          ) -> tuple[Broker, AuthService]:
    config = load_config(config_path)
    store = DiskStore(data_dir, fsync=False)
    auth = AuthService(config.auth)
    broker = Broker(store, ())
    auth.attach(store, broker)
    state = store.recover()
    auth.restore(state)
    broker.restore(state, now)
    return broker, auth


def stop(broker: Broker) -> None:
    flush(broker.store)
    broker.store.close()


def restart(broker: Broker, data_dir: Path, config_path: Path | None = None,
            now: float = 0.0) -> tuple[Broker, AuthService]:
    stop(broker)
    return start(data_dir, config_path, now)


def compact(broker: Any) -> None:
    """What the store task does when the log is big enough: snapshot, rewrite, swap."""
    flush(broker.store)
    broker.store.compact(broker.snapshot())
