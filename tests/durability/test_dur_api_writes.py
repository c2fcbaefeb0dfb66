"""A change made through the management API (what `gateway ctl` and rabbitmqadmin send) is
answered only once it is on disk, as a publisher confirm is: killing the broker with
SIGKILL right after the answer loses none of them."""

from __future__ import annotations

from typing import Any

import httpx
import pika

ROUNDS = 4


def test_api_changes_survive_a_kill_right_after_their_answer(fresh_broker: Any) -> None:
    made: list[str] = []
    for i in range(ROUNDS):
        api = httpx.Client(base_url=f"http://127.0.0.1:{fresh_broker.ports['http']}/api",
                           auth=("guest", "guest"), timeout=10)
        with api:
            user, vhost, queue = f"ops{i}", f"tenant{i}", f"orders{i}"
            assert api.put(f"/users/{user}", json={"password": "s3cret-pass",
                                                   "tags": "management"}).status_code in (201, 204)
            assert api.put(f"/vhosts/{vhost}").status_code in (201, 204)
            assert api.put(f"/permissions/{vhost}/{user}", json={
                "configure": ".*", "write": ".*", "read": ".*"}).status_code in (201, 204)
            assert api.put(f"/queues/{vhost}/{queue}", json={"durable": True}
                           ).status_code in (201, 204)
            made.append(user)
        fresh_broker.restart(kill=True)  # SIGKILL right after the last answer
    api = httpx.Client(base_url=f"http://127.0.0.1:{fresh_broker.ports['http']}/api",
                       auth=("guest", "guest"), timeout=10)
    with api:
        users = {u["name"] for u in api.get("/users").json()}
        assert set(made) <= users
        for i in range(ROUNDS):
            assert api.get(f"/queues/tenant{i}/orders{i}").status_code == 200
    # and the users work: the last one logs in over AMQP to its vhost and sees its queue
    params = pika.ConnectionParameters(
        host="127.0.0.1", port=fresh_broker.ports["amqp"], virtual_host=f"tenant{ROUNDS - 1}",
        credentials=pika.PlainCredentials(f"ops{ROUNDS - 1}", "s3cret-pass"))
    conn = pika.BlockingConnection(params)
    try:
        conn.channel().queue_declare(f"orders{ROUNDS - 1}", passive=True)
    finally:
        conn.close()
