"""Users, vhosts and permissions changed at run time persist through the store; the config
seeds them only on a fresh data directory (as RabbitMQ seeds its default user once)."""

from __future__ import annotations

from pathlib import Path

import pytest

from durability.helpers_dur import compact, restart, start, stop
from gateway.auth.passwords import hash_password
from gateway.core.errors import AccessRefused, NotAllowed, NotFound, PreconditionFailed


def test_config_seeds_a_fresh_data_dir(tmp_path: Path) -> None:
    broker, auth = start(tmp_path)
    assert [u.name for u in auth.list_users()] == ["guest"]
    assert auth.list_vhosts() == ["/"]
    assert [(p.user, p.vhost) for p in auth.list_permissions()] == [("guest", "/")]
    assert list(broker.vhosts) == ["/"]
    stop(broker)


def test_changes_survive_restart_and_config_no_longer_seeds(tmp_path: Path) -> None:
    broker, auth = start(tmp_path)
    auth.add_user("alice", password="s3cret", tags=["management"])
    auth.add_vhost("shop")
    assert "shop" in broker.vhosts
    auth.set_permissions("alice", "shop", "^alice-", ".*", ".*")
    auth.delete_user("guest")  # the seeded default user, gone for good
    broker, auth = restart(broker, tmp_path)
    assert [u.name for u in auth.list_users()] == ["alice"]
    alice = auth.user("alice")
    assert alice is not None and alice.tags == ("management",)
    assert auth.authenticate("alice", "s3cret", loopback=False).name == "alice"
    assert sorted(auth.list_vhosts()) == ["/", "shop"]
    assert sorted(broker.vhosts) == ["/", "shop"]
    auth.check_vhost(alice, "shop")
    assert auth.allowed(alice, "shop", "configure", "alice-q")
    assert not auth.allowed(alice, "shop", "configure", "bob-q")
    with pytest.raises(NotAllowed):
        auth.check_vhost(alice, "/")
    stop(broker)


def test_password_tags_and_permission_changes(tmp_path: Path) -> None:
    broker, auth = start(tmp_path)
    auth.change_password("guest", "new-one")
    auth.set_user_tags("guest", "administrator,monitoring")
    auth.add_user("svc", password_hash=hash_password("pw"))
    auth.set_permissions("svc", "/", "", "^out$", "^in$")
    auth.clear_permissions("guest", "/")
    broker, auth = restart(broker, tmp_path)
    with pytest.raises(AccessRefused):
        auth.authenticate("guest", "guest", loopback=True)
    guest = auth.authenticate("guest", "new-one", loopback=True)
    assert guest.tags == ("administrator", "monitoring")
    with pytest.raises(NotAllowed):
        auth.check_vhost(guest, "/")
    svc = auth.authenticate("svc", "pw", loopback=False)
    assert auth.allowed(svc, "/", "write", "out", resource_kind="exchange")
    assert not auth.allowed(svc, "/", "configure", "anything")
    assert [(p.user, p.configure, p.write, p.read) for p in auth.list_permissions()] == [
        ("svc", "", "^out$", "^in$")]
    stop(broker)


def test_errors(tmp_path: Path) -> None:
    broker, auth = start(tmp_path)
    with pytest.raises(NotFound):
        auth.delete_user("nobody")
    with pytest.raises(NotFound):
        auth.change_password("nobody", "x")
    with pytest.raises(NotFound):
        auth.set_permissions("nobody", "/", ".*", ".*", ".*")
    with pytest.raises(NotFound):
        auth.set_permissions("guest", "nowhere", ".*", ".*", ".*")
    with pytest.raises(PreconditionFailed):
        auth.set_permissions("guest", "/", "(", ".*", ".*")
    with pytest.raises(PreconditionFailed):
        auth.add_user("bad", password_hash="not-a-hash")
    with pytest.raises(NotFound):
        auth.delete_vhost("nowhere")
    with pytest.raises(NotFound):
        auth.clear_permissions("guest", "nowhere")
    stop(broker)


def test_user_without_password_cannot_log_in(tmp_path: Path) -> None:
    broker, auth = start(tmp_path)
    auth.add_user("nopw", tags=["monitoring"])
    auth.set_permissions("nopw", "/", ".*", ".*", ".*")
    with pytest.raises(AccessRefused):
        auth.authenticate("nopw", "", loopback=True)
    assert [u.password_hash for u in auth.list_users() if u.name == "nopw"] == [""]
    stop(broker)


def test_delete_vhost_removes_everything_in_it_and_calls_the_hook(tmp_path: Path) -> None:
    broker, auth = start(tmp_path)
    closed: list[str] = []
    broker.on_vhost_deleted.append(closed.append)
    auth.add_vhost("tmp")
    auth.set_permissions("guest", "tmp", ".*", ".*", ".*")
    vh = broker.vhost("tmp")
    vh.declare_exchange("x", "fanout", durable=True)
    q = vh.declare_queue("q", durable=True)
    vh.bind(q, "x", "")
    vh.set_policy("p", ".*", {"max-length": 5})
    auth.delete_vhost("tmp")
    assert closed == ["tmp"] and q.deleted
    assert "tmp" not in broker.vhosts and auth.list_vhosts() == ["/"]
    assert [p.vhost for p in auth.list_permissions()] == ["/"]
    # re-created empty, after a restart too
    broker, auth = restart(broker, tmp_path)
    assert "tmp" not in broker.vhosts
    auth.add_vhost("tmp")
    assert set(broker.vhost("tmp").queues) == set()
    assert not broker.vhost("tmp").policies
    broker, auth = restart(broker, tmp_path)
    assert "tmp" in broker.vhosts and "x" not in broker.vhost("tmp").exchanges
    stop(broker)


def test_auth_state_survives_compaction(tmp_path: Path) -> None:
    broker, auth = start(tmp_path)
    auth.add_user("carol", password="pw")
    auth.add_vhost("v2")
    auth.set_permissions("carol", "v2", ".*", "", "")
    broker.vhost("v2").set_policy("ttl", "^t", {"message-ttl": 1000})
    compact(broker)
    broker, auth = restart(broker, tmp_path)
    assert sorted(u.name for u in auth.list_users()) == ["carol", "guest"]
    assert sorted(auth.list_vhosts()) == ["/", "v2"]
    assert broker.vhost("v2").policies["ttl"].definition == {"message-ttl": 1000}
    stop(broker)


def test_config_users_do_not_override_a_seeded_store(tmp_path: Path) -> None:
    data = tmp_path / "data"
    broker, auth = start(data)
    stop(broker)
    conf = tmp_path / "gateway.toml"
    conf.write_text('[[users]]\nname = "other"\npassword = "x"\n[[vhosts]]\nname = "/"\n')
    broker, auth = start(data, conf)
    assert [u.name for u in auth.list_users()] == ["guest"]
    stop(broker)
    fresh = tmp_path / "fresh"
    broker, auth = start(fresh, conf)
    assert [u.name for u in auth.list_users()] == ["other"]
    stop(broker)
