"""The API over real sockets (port 0): pipelining, long-poll cancellation when the client
hangs up, the server's limits seen through API routes, auth over the wire."""

import orjson
import pytest

from tests.http.helpers import RawClient

from .conftest import wait_for


class Client(RawClient):
    """The HTTP tests' raw-socket client, with the shorter name these tests use."""

    read = RawClient.read_response


def request(method, path, body=None, headers=()):
    payload = orjson.dumps(body) if body is not None else b""
    lines = [f"{method} {path} HTTP/1.1", "Host: t"] + [f"{k}: {v}" for k, v in headers]
    lines.append(f"Content-Length: {len(payload)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


@pytest.fixture
def client(env, clock):
    clients = []

    def connect(**knobs):
        c = Client(env.serve(clock=clock, **knobs))
        clients.append(c)
        return c

    yield connect
    for c in clients:
        c.close()


def test_pipelined_requests_are_answered_in_order(env, client):
    c = client()
    c.send(request("PUT", "/api/v1/tubes/p", {"driver": "fifo"})
           + request("POST", "/api/v1/tubes/p/tasks", {"data": "one"})
           + request("POST", "/api/v1/tubes/p/tasks", {"data": "two"})
           + request("POST", "/api/v1/tubes/p/take", {}, [("X-Fiberapp-Session", "pipe")])
           + request("GET", "/api/v1/tubes/p/tasks/999"))
    statuses = []
    bodies = []
    for _ in range(5):
        resp = c.read()
        statuses.append(resp["status"])
        bodies.append(orjson.loads(resp["body"]))
    assert statuses == [201, 201, 201, 200, 404]
    assert bodies[3]["task"]["data"] == "one" and bodies[3]["task"]["id"] == bodies[1]["task"]["id"]
    assert bodies[4]["error"]["code"] == "no_such_task"


def test_a_long_poll_whose_client_hangs_up_takes_nothing(env, client):
    env.ok("PUT", "/api/v1/tubes/lp", json={"driver": "fifottl"}, status=201)
    c = client()
    c.send(request("POST", "/api/v1/tubes/lp/take", {"timeout": 300}))
    tube = env.store.tube("lp")
    wait_for(lambda: tube.statistics()["waiting"] == 1)
    assert len(env.api.sessions) == 1
    c.close()
    wait_for(lambda: tube.statistics()["waiting"] == 0)
    wait_for(lambda: len(env.api.sessions) == 0)  # its fresh session ended at once
    task_id = env.ok("POST", "/api/v1/tubes/lp/tasks", json={"data": 1}, status=201)["task"]["id"]
    task = env.ok("GET", f"/api/v1/tubes/lp/tasks/{task_id}")["task"]
    assert task["state"] == "ready" and task["attempts"] == 0
    assert tube.statistics()["calls"]["take"] == 0


def test_a_long_poll_is_answered_when_a_task_arrives(env, client):
    env.ok("PUT", "/api/v1/tubes/lp", json={"driver": "fifo"}, status=201)
    c = client()
    c.send(request("POST", "/api/v1/tubes/lp/take", {"timeout": 300}, [("X-Fiberapp-Session", "w1")]))
    wait_for(lambda: env.store.tube("lp").statistics()["waiting"] == 1)
    task_id = env.ok("POST", "/api/v1/tubes/lp/tasks", json={"data": "x"}, status=201)["task"]["id"]
    resp = c.read()
    assert resp["status"] == 200 and resp["headers"]["x-fiberapp-session"] == "w1"
    assert orjson.loads(resp["body"])["task"]["id"] == task_id


def test_huge_headers_get_431(env, client):
    c = client(max_header_size=1024)
    c.send(request("GET", "/api/v1/tubes", headers=[("X-Pad", "a" * 4000)]))
    assert c.read()["status"] == 431
    assert c.closed_by_peer()


def test_huge_body_gets_413_and_puts_nothing(env, client):
    env.ok("PUT", "/api/v1/tubes/big", json={"driver": "fifo"}, status=201)
    c = client(max_body_size=1000)
    c.send(request("POST", "/api/v1/tubes/big/tasks", {"data": "x" * 5000}))
    assert c.read()["status"] == 413
    assert env.store.tube("big").statistics()["calls"]["put"] == 0


def test_garbage_gets_400_and_the_server_lives_on(env, client):
    c = client()
    c.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n")
    assert c.read()["status"] == 400
    assert c.closed_by_peer()
    c2 = Client(env.servers[0].address)
    c2.send(request("GET", "/health"))
    assert c2.read()["status"] == 200
    c2.close()


def test_a_slow_client_is_cut_off_by_the_header_timeout(env, client, clock):
    c = client(header_timeout=5)
    c.send(b"POST /api/v1/tubes/x/tasks HTTP/1.1\r\nHost: t\r\n")  # and then nothing
    wait_for(lambda: clock.pending() > 0)
    clock.advance(6)
    assert c.closed_by_peer()


def test_auth_over_the_wire(make_env, clock):
    e = make_env(api_token="wire-token")
    c = Client(e.serve(clock=clock))
    try:
        c.send(request("GET", "/api/v1/tubes") + request("GET", "/api/v1/tubes",
                                                         headers=[("Authorization", "Bearer wire-token")]))
        first, second = c.read(), c.read()
        assert first["status"] == 401 and orjson.loads(first["body"])["error"]["code"] == "unauthorized"
        assert second["status"] == 200
    finally:
        c.close()


def test_metrics_include_http_latency_per_route(env, client):
    c = client()
    c.send(request("GET", "/api/v1/tubes"))
    assert c.read()["status"] == 200
    c.send(request("GET", "/metrics"))
    text = c.read()["body"].decode()
    assert "fiberapp_queue_tasks" in text or "fiberapp_fibers" in text
    assert "/api/v1/tubes" in text  # the HTTP server's per-route histogram, same registry


def test_many_long_polls_each_get_exactly_one_task(env, client):
    env.ok("PUT", "/api/v1/tubes/fan", json={"driver": "fifo"}, status=201)
    clients = [client() for _ in range(20)]
    for i, c in enumerate(clients):
        c.send(request("POST", "/api/v1/tubes/fan/take", {"timeout": 300}, [("X-Fiberapp-Session", f"c{i}")]))
        # one at a time, so the order in which they wait is known
        wait_for(lambda: env.store.tube("fan").statistics()["waiting"] == i + 1)
    ids = {env.ok("POST", "/api/v1/tubes/fan/tasks", json={"data": i}, status=201)["task"]["id"]
           for i in range(20)}
    got = []
    for c in clients:
        resp = c.read()
        assert resp["status"] == 200
        got.append(orjson.loads(resp["body"])["task"]["id"])
    assert sorted(got) == sorted(ids)  # every task to exactly one waiter
    # and the waiters were served in the order they started waiting (FIFO)
    assert got == sorted(got)
