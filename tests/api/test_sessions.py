"""HTTP sessions: ownership, expiry after session_ttl under the FakeClock, and a long poll
keeping its session alive."""
import gevent.event
import pytest

from .conftest import error_of

S = "X-Fiberapp-Session"


def setup(make_env, ttl=10, **tube_options):
    env = make_env(session_ttl=ttl)
    env.ok("PUT", "/api/v1/tubes/jobs", json={"driver": "fifottl", "options": tube_options}, status=201)
    return env


def put(env, data=1):
    return env.ok("POST", "/api/v1/tubes/jobs/tasks", json={"data": data}, status=201)["task"]["id"]


def state(env, task_id):
    return env.ok("GET", f"/api/v1/tubes/jobs/tasks/{task_id}")["task"]


def test_idle_session_ends_after_ttl_and_its_tasks_return_to_ready(make_env, clock):
    env = setup(make_env, ttl=10)
    task_id = put(env)
    resp = env.call("POST", "/api/v1/tubes/jobs/take", json={}, headers={S: "worker-1"})
    assert resp.status == 200
    clock.advance(9.9)
    assert state(env, task_id)["state"] == "taken"
    assert "worker-1" in env.api.sessions
    clock.advance(0.2)
    task = state(env, task_id)
    assert task["state"] == "ready" and task["attempts"] == 1 and task["releases"] == 1
    assert "worker-1" not in env.api.sessions and env.api.sessions.ended == 1
    # the old owner's ack is now refused: the task is not taken any more
    assert error_of(env.call("POST", f"/api/v1/tubes/jobs/tasks/{task_id}/ack", headers={S: "worker-1"})) \
        == (409, "wrong_state")


def test_every_request_of_the_session_postpones_its_end(make_env, clock):
    env = setup(make_env, ttl=10)
    first, second = put(env), put(env)
    env.call("POST", "/api/v1/tubes/jobs/take", json={}, headers={S: "w"})
    clock.advance(8)
    env.call("POST", "/api/v1/tubes/jobs/take", json={}, headers={S: "w"})  # seen again at t=8
    clock.advance(8)  # t=16: 8 s since last seen
    assert state(env, first)["state"] == "taken" and state(env, second)["state"] == "taken"
    env.ok("POST", f"/api/v1/tubes/jobs/tasks/{first}/ack", headers={S: "w"})  # seen at t=16
    clock.advance(9.9)
    assert state(env, second)["state"] == "taken"
    clock.advance(0.2)
    assert state(env, second)["state"] == "ready"


def test_sessions_expire_oldest_first_and_independently(make_env, clock):
    env = setup(make_env, ttl=10)
    a, b = put(env, "a"), put(env, "b")
    env.call("POST", "/api/v1/tubes/jobs/take", json={}, headers={S: "sa"})
    clock.advance(5)
    env.call("POST", "/api/v1/tubes/jobs/take", json={}, headers={S: "sb"})
    clock.advance(5.1)
    assert (state(env, a)["state"], state(env, b)["state"]) == ("ready", "taken")
    clock.advance(5)
    assert state(env, b)["state"] == "ready"
    assert env.api.sessions.ended == 2


def test_a_long_poll_keeps_its_session_alive(make_env, clock, runtime):
    env = setup(make_env, ttl=10)
    held = put(env, "held")
    env.call("POST", "/api/v1/tubes/jobs/take", json={}, headers={S: "w"})
    # The same session now long-polls for 100 s: far longer than session_ttl.
    poll = runtime.spawn(env.call, "POST", "/api/v1/tubes/jobs/take", json={"timeout": 100},
                         headers={S: "w"}, name="long-poll")
    clock.advance(50)
    assert not poll.ready()
    assert state(env, held)["state"] == "taken"
    fresh = put(env, "fresh")
    resp = poll.join(timeout=5)
    assert resp.status == 200 and resp.json_body()["task"]["id"] == fresh
    clock.advance(9.9)
    assert state(env, held)["state"] == "taken"
    clock.advance(0.2)
    assert state(env, held)["state"] == "ready" and state(env, fresh)["state"] == "ready"


def test_a_session_that_took_nothing_ends_quietly(make_env, clock):
    env = setup(make_env, ttl=10)
    assert env.call("POST", "/api/v1/tubes/jobs/take", json={}, headers={S: "idle"}).status == 204
    clock.advance(10.1)
    assert "idle" not in env.api.sessions and env.api.sessions.ended == 1


def test_fresh_sessions_are_distinct(make_env):
    env = setup(make_env)
    put(env), put(env)
    s1 = env.call("POST", "/api/v1/tubes/jobs/take", json={}).header(S)
    s2 = env.call("POST", "/api/v1/tubes/jobs/take", json={}).header(S)
    assert s1 and s2 and s1 != s2


def test_http_sessions_cannot_act_as_a_fiber_scripts_session(make_env, runtime):
    env = setup(make_env)
    task_id = put(env)
    tube = env.store.tube("jobs")
    took, done = gevent.event.Event(), gevent.event.Event()
    names = []

    def script():  # a fiber script's consumer, on its fiber's default session
        tube.take(0)
        names.append(env.store.sessions.current())
        took.set()
        done.wait()

    fiber = runtime.spawn(script, name="script")
    assert took.wait(5)
    try:
        assert state(env, task_id)["state"] == "taken"
        resp = env.call("POST", f"/api/v1/tubes/jobs/tasks/{task_id}/ack", headers={S: names[0]})
        assert error_of(resp) == (409, "not_owner")
    finally:
        done.set()
        fiber.join(timeout=5)


def test_polling_without_a_session_header_leaves_no_sessions_behind(make_env):
    env = setup(make_env)
    for _ in range(20):
        resp = env.call("POST", "/api/v1/tubes/jobs/take", json={})
        assert resp.status == 204 and resp.header(S)
    assert len(env.api.sessions) == 0
    put(env)
    session = env.call("POST", "/api/v1/tubes/jobs/take", json={}).header(S)
    assert len(env.api.sessions) == 1 and session in env.api.sessions  # it owns a task now


def test_check_token_agrees_with_the_regex_for_every_kind_of_value():
    from fiberapp.api.errors import InvalidSession
    from fiberapp.api.sessions import check_token, parse_token

    values = ["a", "bench-client", "A.b_c-9", "x" * 128, "x" * 129, "", "a b", "a,b", "é", "a\n",
              "tok/1", "a" * 64 + "!", "ok.ok", "-", "..", "\u0661", "a\x00"]
    for value in values:
        try:
            expected = parse_token(value)
        except InvalidSession:
            expected = InvalidSession
        try:
            got = check_token(value)
        except InvalidSession:
            got = InvalidSession
        assert got == expected, value


def test_a_repeated_session_header_is_refused_as_header_joins_it(env):
    from fiberapp.http.request import Request

    req = Request("POST", "/x", "", [(b"X-Fiberapp-Session", b"a"), (b"x-fiberapp-session", b"b")], b"")
    with pytest.raises(Exception) as info:
        env.api.session_of(req)
    assert getattr(info.value, "status", None) == 400
    req = Request("POST", "/x", "", [(b"Host", b"h"), (b"X-FIBERAPP-SESSION", b" tok-1 ")], b"")
    assert env.api.session_of(req) == ("tok-1", False)
