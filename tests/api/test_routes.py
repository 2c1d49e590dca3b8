"""Every route in-process (handlers called through the router, no socket), and every error
status a client can provoke through them."""
import orjson
import pytest

from .conftest import error_of

S = "X-Fiberapp-Session"


def mk(env, name="jobs", driver="fifottl", **options):
    return env.ok("PUT", f"/api/v1/tubes/{name}", json={"driver": driver, "options": options}, status=201)


def put(env, tube="jobs", status=201, **body):
    body.setdefault("data", {"n": 1})
    return env.ok("POST", f"/api/v1/tubes/{tube}/tasks", json=body, status=status)


def take(env, tube="jobs", session=None, **body):
    headers = {S: session} if session else None
    return env.call("POST", f"/api/v1/tubes/{tube}/take", json=body, headers=headers)


# -- tubes ------------------------------------------------------------------------------

def test_create_tube_201_then_200_same_driver_then_409_other_driver(env):
    created = mk(env, ttr=30)
    assert created["name"] == "jobs" and created["driver"] == "fifottl"
    assert created["options"]["ttr"] == 30
    assert created["stats"]["tasks"] == {"ready": 0, "taken": 0, "delayed": 0, "buried": 0, "done": 0, "total": 0}
    again = env.ok("PUT", "/api/v1/tubes/jobs", json={"driver": "fifottl"}, status=200)
    assert again["name"] == "jobs"
    resp = env.call("PUT", "/api/v1/tubes/jobs", json={"driver": "utube"})
    assert error_of(resp) == (409, "tube_exists")


@pytest.mark.parametrize("body,code", [
    ({"driver": "nope"}, "unknown_driver"),
    ({"driver": "fifottl", "options": {"ttl": "long"}}, "invalid_option"),
    ({"driver": "fifottl", "options": {"colour": 1}}, "invalid_option"),
    ({"driver": "fifottl", "options": {"on_task_change": "x"}}, "invalid_field"),
    ({"driver": "fifottl", "options": []}, "invalid_field"),
    ({}, "missing_field"),
    ({"driver": "fifo", "extra": 1}, "unknown_field"),
])
def test_create_tube_bad_bodies_are_400_and_create_nothing(env, body, code):
    resp = env.call("PUT", "/api/v1/tubes/jobs", json=body)
    assert error_of(resp) == (400, code)
    assert env.ok("GET", "/api/v1/tubes") == {"tubes": []}


def test_bad_tube_name_is_400(env):
    resp = env.call("PUT", "/api/v1/tubes/bad%20name", json={"driver": "fifo"})
    assert error_of(resp) == (400, "invalid_name")


def test_list_and_get_tubes_with_stats(env):
    mk(env, "a", "fifo")
    mk(env, "b", "utubettl")
    put(env, "b", utube="u1")
    tubes = env.ok("GET", "/api/v1/tubes")["tubes"]
    assert [(t["name"], t["driver"]) for t in tubes] == [("a", "fifo"), ("b", "utubettl")]
    b = env.ok("GET", "/api/v1/tubes/b")
    assert b["stats"]["tasks"]["ready"] == 1 and b["stats"]["calls"]["put"] == 1
    assert error_of(env.call("GET", "/api/v1/tubes/zzz")) == (404, "no_such_tube")


def test_delete_tube_204_409_while_taken_404_after(env):
    mk(env)
    put(env)
    resp = take(env, session="s1")
    assert resp.status == 200
    assert error_of(env.call("DELETE", "/api/v1/tubes/jobs")) == (409, "tube_busy")
    task_id = resp.json_body()["task"]["id"]
    env.ok("POST", f"/api/v1/tubes/jobs/tasks/{task_id}/ack", headers={S: "s1"})
    resp = env.call("DELETE", "/api/v1/tubes/jobs")
    assert resp.status == 204 and resp.body == b""
    assert error_of(env.call("DELETE", "/api/v1/tubes/jobs")) == (404, "no_such_tube")


def test_truncate_counts_live_tasks(env):
    mk(env)
    for _ in range(3):
        put(env)
    assert env.ok("POST", "/api/v1/tubes/jobs/truncate") == {"deleted": 3}
    assert env.ok("GET", "/api/v1/tubes/jobs")["stats"]["tasks"]["total"] == 0
    assert error_of(env.call("POST", "/api/v1/tubes/nope/truncate")) == (404, "no_such_tube")
    assert error_of(env.call("POST", "/api/v1/tubes/jobs/truncate", json={"x": 1})) == (400, "unknown_field")


# -- put / list / peek / delete ------------------------------------------------------------

def test_put_one_task_and_its_fields(env):
    mk(env)
    task = put(env, data={"hello": [1, 2]}, pri=5, ttl=60, ttr=10, delay=0.5)["task"]
    assert task["state"] == "delayed" and task["data"] == {"hello": [1, 2]}
    assert (task["pri"], task["ttl"], task["ttr"], task["delay"]) == (5, 60.0, 10.0, 0.5)
    assert task["attempts"] == 0 and task["tube"] == "jobs"
    assert isinstance(task["id"], int) and task["created_at"] == env.clock.time()
    assert "session" not in task


def test_put_with_a_live_key_answers_200_existing(env):
    mk(env)
    first = put(env, key="order-7", data=1)["task"]
    again = put(env, key="order-7", data=2, status=200)
    assert again["existing"] is True and again["task"]["id"] == first["id"] and again["task"]["data"] == 1
    assert env.ok("GET", "/api/v1/tubes/jobs")["stats"]["tasks"]["total"] == 1


def test_put_batch(env):
    mk(env)
    out = env.ok(
        "POST", "/api/v1/tubes/jobs/tasks", json={"tasks": [{"data": 1}, {"data": 2, "pri": 3}]}, status=201)
    assert [t["data"] for t in out["tasks"]] == [1, 2] and out["tasks"][1]["pri"] == 3
    ids = [t["id"] for t in out["tasks"]]
    assert ids == sorted(ids) and len(set(ids)) == 2
    # a bad item refuses the whole batch
    resp = env.call("POST", "/api/v1/tubes/jobs/tasks", json={"tasks": [{"data": 3}, {"pri": 1}]})
    assert error_of(resp) == (400, "missing_field")
    resp = env.call("POST", "/api/v1/tubes/jobs/tasks", json={"tasks": [{"data": 3}], "pri": 1})
    assert error_of(resp) == (400, "invalid_field")
    assert env.ok("GET", "/api/v1/tubes/jobs")["stats"]["tasks"]["total"] == 2


@pytest.mark.parametrize("raw,code", [
    (b"{", "invalid_json"),
    (b"\xff\xfe", "invalid_json"),
    (b"[1]", "invalid_json"),
    (b'{"data": 1, "ttl": -1}', "invalid_field"),
    (b'{"data": 1, "ttl": 1e400}', "invalid_json"),
    (b'{"data": 1, "pri": 99999999999999999999999}', "invalid_field"),
    (b'{"data": 1, "typo": 1}', "unknown_field"),
    (b'{"pri": 1}', "missing_field"),
    (b'{}', "missing_field"),
    (b"", "missing_field"),
])
def test_bad_put_bodies_are_400_and_put_nothing(env, raw, code):
    mk(env)
    resp = env.call("POST", "/api/v1/tubes/jobs/tasks", body=raw)
    assert error_of(resp) == (400, code)
    assert env.ok("GET", "/api/v1/tubes/jobs")["stats"]["calls"]["put"] == 0


def test_put_option_the_driver_lacks_is_400(env):
    mk(env, driver="fifo")
    assert error_of(env.call("POST", "/api/v1/tubes/jobs/tasks", json={"data": 1, "pri": 1})) == (400, "invalid_option")


def test_task_too_large_is_413(env):
    mk(env)
    env.store.max_task_size = 1000
    resp = env.call("POST", "/api/v1/tubes/jobs/tasks", json={"data": "x" * 2000})
    assert error_of(resp) == (413, "task_too_large")


def test_draining_store_refuses_puts_with_503(env):
    mk(env)
    env.store.drain(True)
    assert error_of(env.call("POST", "/api/v1/tubes/jobs/tasks", json={"data": 1})) == (503, "draining")


def test_list_tasks_by_state_and_limit(env):
    mk(env)
    ids = [put(env, data=i)["task"]["id"] for i in range(5)]
    put(env, data="later", delay=10)
    all_ = env.ok("GET", "/api/v1/tubes/jobs/tasks")["tasks"]
    assert [t["id"] for t in all_][:5] == ids and len(all_) == 6
    ready = env.ok("GET", "/api/v1/tubes/jobs/tasks?state=ready&limit=2")["tasks"]
    assert [t["id"] for t in ready] == ids[:2]
    assert env.ok("GET", "/api/v1/tubes/jobs/tasks?state=done") == {"tasks": []}
    delayed = env.ok("GET", "/api/v1/tubes/jobs/tasks?state=delayed")["tasks"]
    assert [t["data"] for t in delayed] == ["later"]
    for q, code in (("state=gone", "invalid_field"), ("limit=x", "invalid_field"),
                    ("limit=0", "invalid_field"), ("page=2", "unknown_field"), ("state=%ff", "bad_request")):
        assert error_of(env.call("GET", f"/api/v1/tubes/jobs/tasks?{q}")) == (400, code)


def test_peek_and_delete(env):
    mk(env)
    task_id = put(env, data="p")["task"]["id"]
    assert env.ok("GET", f"/api/v1/tubes/jobs/tasks/{task_id}")["task"]["data"] == "p"
    gone = env.ok("DELETE", f"/api/v1/tubes/jobs/tasks/{task_id}")["task"]
    assert gone["id"] == task_id and gone["state"] == "done"
    assert error_of(env.call("GET", f"/api/v1/tubes/jobs/tasks/{task_id}")) == (404, "no_such_task")
    assert error_of(env.call("DELETE", f"/api/v1/tubes/jobs/tasks/{task_id}")) == (404, "no_such_task")
    assert error_of(env.call("GET", "/api/v1/tubes/jobs/tasks/99999999999999999999999")) == (404, "no_such_task")
    assert error_of(env.call("GET", "/api/v1/tubes/jobs/tasks/-3")) == (404, "no_such_task")
    assert error_of(env.call("GET", "/api/v1/tubes/nope/tasks/1")) == (404, "no_such_tube")


# -- take / ack / release / bury / touch / kick -----------------------------------------------

def test_take_ack_cycle_with_a_fresh_session(env):
    mk(env)
    task_id = put(env, data="work")["task"]["id"]
    resp = take(env)
    assert resp.status == 200
    session = resp.header(S)
    assert session and len(session) <= 128
    task = resp.json_body()["task"]
    assert task["id"] == task_id and task["state"] == "taken" and task["attempts"] == 1
    done = env.ok("POST", f"/api/v1/tubes/jobs/tasks/{task_id}/ack", headers={S: session})["task"]
    assert done["state"] == "done"
    assert error_of(env.call("POST", f"/api/v1/tubes/jobs/tasks/{task_id}/ack", headers={S: session})) == (404, "no_such_task")


def test_take_timeout_zero_on_empty_tube_is_204_with_session(env):
    mk(env)
    resp = take(env, session="me", timeout=0)
    assert resp.status == 204 and resp.body == b"" and resp.header(S) == "me"
    assert error_of(take(env, tube="nope")) == (404, "no_such_tube")
    assert error_of(take(env, timeout=-1)) == (400, "invalid_field")
    assert error_of(take(env, count=0)) == (400, "invalid_field")


def test_take_count_returns_a_list(env):
    mk(env)
    ids = [put(env, data=i)["task"]["id"] for i in range(3)]
    resp = take(env, session="s", count=2)
    assert resp.status == 200 and [t["id"] for t in resp.json_body()["tasks"]] == ids[:2]
    resp = take(env, session="s", count=5)
    assert [t["id"] for t in resp.json_body()["tasks"]] == ids[2:]
    assert take(env, session="s", count=5).status == 204


def test_take_waits_and_a_put_wakes_it(env, runtime, clock):
    mk(env)
    waiter = runtime.spawn(take, env, session="w", timeout=30, name="taker")
    clock.advance(1)
    assert not waiter.ready()
    task_id = put(env, data="late")["task"]["id"]
    resp = waiter.join(timeout=5)
    assert resp.status == 200 and resp.json_body()["task"]["id"] == task_id


def test_take_times_out_on_the_fake_clock(env, runtime, clock):
    mk(env)
    waiter = runtime.spawn(take, env, session="w", timeout=30, name="taker")
    clock.advance(29.9)
    assert not waiter.ready()
    clock.advance(0.2)
    assert waiter.join(timeout=5).status == 204


def test_take_any(env):
    mk(env, "a")
    mk(env, "b")
    task_id = put(env, "b", data="from b")["task"]["id"]
    resp = env.call("POST", "/api/v1/take", json={"tubes": ["a", "b"], "timeout": 0}, headers={S: "s"})
    assert resp.status == 200 and resp.json_body()["task"]["id"] == task_id and resp.header(S) == "s"
    resp = env.call("POST", "/api/v1/take", json={"tubes": ["a", "b"]}, headers={S: "s"})
    assert resp.status == 204
    assert error_of(env.call("POST", "/api/v1/take", json={"tubes": ["a", "nope"]})) == (404, "no_such_tube")
    assert error_of(env.call("POST", "/api/v1/take", json={"tubes": []})) == (400, "invalid_field")
    assert error_of(env.call("POST", "/api/v1/take", json={})) == (400, "missing_field")


def test_release_with_delay_and_pri(env, clock):
    mk(env)
    task_id = put(env)["task"]["id"]
    take(env, session="s")
    task = env.ok("POST", f"/api/v1/tubes/jobs/tasks/{task_id}/release", json={"delay": 5, "pri": 7},
                  headers={S: "s"})["task"]
    assert task["state"] == "delayed" and task["pri"] == 7 and task["releases"] == 1
    clock.advance(5)
    assert env.ok("GET", f"/api/v1/tubes/jobs/tasks/{task_id}")["task"]["state"] == "ready"
    assert error_of(env.call("POST", f"/api/v1/tubes/jobs/tasks/{task_id}/release", headers={S: "s"})) \
        == (409, "wrong_state")


def test_bury_and_kick(env):
    mk(env)
    ids = [put(env, data=i)["task"]["id"] for i in range(3)]
    for task_id in ids:
        assert env.ok("POST", f"/api/v1/tubes/jobs/tasks/{task_id}/bury")["task"]["state"] == "buried"
    assert error_of(env.call("POST", f"/api/v1/tubes/jobs/tasks/{ids[0]}/bury")) == (409, "wrong_state")
    assert env.ok("POST", "/api/v1/tubes/jobs/kick", json={"count": 2}) == {"kicked": 2}
    assert env.ok("POST", "/api/v1/tubes/jobs/kick") == {"kicked": 1}
    assert env.ok("POST", "/api/v1/tubes/jobs/kick") == {"kicked": 0}
    assert error_of(env.call("POST", "/api/v1/tubes/jobs/kick", json={"count": 0})) == (400, "invalid_field")
    assert error_of(env.call("POST", "/api/v1/tubes/nope/kick")) == (404, "no_such_tube")


def test_touch_extends_ttr(env, clock):
    mk(env, ttr=10)
    task_id = put(env)["task"]["id"]
    take(env, session="s")
    clock.advance(8)
    env.ok("POST", f"/api/v1/tubes/jobs/tasks/{task_id}/touch", json={"delta": 10}, headers={S: "s"})
    clock.advance(8)  # 16 s after the take: still within 10 + 10
    assert env.ok("GET", f"/api/v1/tubes/jobs/tasks/{task_id}")["task"]["state"] == "taken"
    clock.advance(5)
    assert env.ok("GET", f"/api/v1/tubes/jobs/tasks/{task_id}")["task"]["state"] == "ready"
    for body, code in (({}, "missing_field"), ({"delta": 0}, "invalid_field"), ({"delta": "1"}, "invalid_field")):
        resp = env.call("POST", f"/api/v1/tubes/jobs/tasks/{task_id}/touch", json=body, headers={S: "s"})
        assert error_of(resp) == (400, code)


def test_touch_on_a_fifo_tube_is_400_unsupported(env):
    mk(env, driver="fifo")
    task_id = put(env)["task"]["id"]
    take(env, session="s")
    resp = env.call("POST", f"/api/v1/tubes/jobs/tasks/{task_id}/touch", json={"delta": 1}, headers={S: "s"})
    assert error_of(resp) == (400, "unsupported")


def test_another_sessions_task_cannot_be_acked_released_or_touched(env):
    mk(env)
    task_id = put(env)["task"]["id"]
    assert take(env, session="owner").status == 200
    for op, body in (("ack", None), ("release", {}), ("touch", {"delta": 1})):
        for headers in ({S: "thief"}, None):
            resp = env.call("POST", f"/api/v1/tubes/jobs/tasks/{task_id}/{op}", json=body, headers=headers)
            assert error_of(resp) == (409, "not_owner"), (op, headers)
    # bury is allowed to anyone, as in tarantool/queue
    assert env.ok("POST", f"/api/v1/tubes/jobs/tasks/{task_id}/bury", headers={S: "thief"})["task"]["state"] == "buried"


def test_ack_of_a_ready_task_is_409_wrong_state(env):
    mk(env)
    task_id = put(env)["task"]["id"]
    assert error_of(env.call("POST", f"/api/v1/tubes/jobs/tasks/{task_id}/ack", headers={S: "s"})) == (409, "wrong_state")


def test_bad_session_header_is_400(env):
    mk(env)
    for bad in ("x" * 129, "has space", "semi;colon"):
        assert error_of(take(env, session=bad)) == (400, "invalid_session")


def test_utube_serialises_each_key(env):
    mk(env, driver="utube")
    a1 = put(env, utube="a", data=1)["task"]["id"]
    put(env, utube="a", data=2)
    b1 = put(env, utube="b", data=3)["task"]["id"]
    got = [take(env, session="s").json_body()["task"]["id"] for _ in range(2)]
    assert got == [a1, b1]
    assert take(env, session="s").status == 204


# -- system routes ------------------------------------------------------------------------

def test_health(env):
    assert env.ok("GET", "/health") == {"status": "ok"}
    env.store.drain(True)
    resp = env.call("GET", "/health")
    assert resp.status == 503 and resp.json_body() == {"status": "draining"}


def test_health_from_a_callable(make_env):
    states = iter([(503, {"status": "recovering"}), "ok", "draining"])
    e = make_env(health=lambda: next(states))
    assert (e.call("GET", "/health").status, e.call("GET", "/health").status, e.call("GET", "/health").status) \
        == (503, 200, 503)


def test_fibers_lists_the_runtime(env):
    fibers = env.ok("GET", "/api/v1/fibers")["fibers"]
    names = {f["name"] for f in fibers}
    assert "api-session-reaper" in names
    for f in fibers:
        assert {"id", "name", "status", "cpu_time", "switches"} <= set(f)


def test_snapshot_without_persistence_is_503(env):
    assert error_of(env.call("POST", "/api/v1/snapshot")) == (503, "persistence_off")


def test_metrics_text(env):
    mk(env)
    put(env)
    text = env.call("GET", "/metrics").body.decode()
    assert 'fiberapp_queue_tasks{state="ready",tube="jobs"} 1.0' in text
    assert 'fiberapp_queue_calls_total{call="put",tube="jobs"} 1.0' in text
    assert "fiberapp_fibers " in text and "fiberapp_loop_lag_seconds" in text


def test_unknown_api_path_404_and_wrong_method_405_in_the_api_error_shape(env):
    assert error_of(env.call("GET", "/api/v1/nothing/here")) == (404, "no_such_endpoint")
    resp = env.call("PATCH", "/api/v1/tubes/jobs")
    assert error_of(resp) == (405, "method_not_allowed")
    assert set(resp.header("Allow").split(", ")) == {"GET", "HEAD", "PUT", "DELETE"}
    assert error_of(env.call("GET", "/api/v1/tubes/jobs/tasks/abc")) == (404, "no_such_endpoint")


def test_error_bodies_are_json_with_code_and_message(env):
    resp = env.call("GET", "/api/v1/tubes/nope")
    assert resp.content_type == b"application/json"
    body = orjson.loads(resp.body)
    assert "nope" in body["error"]["message"]


def test_task_json_matches_the_stores_own_view_without_the_owner(env, clock):
    from fiberapp.api.tasks import task_json

    mk(env)
    task_id = put(env, data="a", delay=3, ttl=50, key="k")["task"]["id"]
    take(env, session="s")  # nothing ready yet
    clock.advance(4)
    take(env, session="s")
    for task in [env.store.tube("jobs").peek(task_id)]:
        expected = task.to_dict()
        expected.pop("session")
        if not expected["existing"]:
            expected.pop("existing")
        assert task_json(task, env.store.clock) == expected
        assert task.session == "http.s"  # the owner exists, and is not shown
    task = env.store.tube("jobs").put(b"\x00\xff")
    out = task_json(task, env.store.clock)
    assert out["data"] == "AP8=" and out["data_encoding"] == "base64"


def test_release_past_max_attempts_answers_the_dead_lettered_task(env):
    mk(env, "dlq", "fifo")
    mk(env, "jobs", "fifottl", max_attempts=1, dead_letter="dlq")
    task_id = put(env, data="poison")["task"]["id"]
    assert take(env, session="s").status == 200
    task = env.ok("POST", f"/api/v1/tubes/jobs/tasks/{task_id}/release", headers={S: "s"})["task"]
    assert (task["tube"], task["state"], task["id"], task["data"]) == ("dlq", "ready", task_id, "poison")
    assert task["history"][0]["tube"] == "jobs" and task["history"][0]["attempts"] == 1
    assert env.ok("GET", f"/api/v1/tubes/dlq/tasks/{task_id}")["task"]["state"] == "ready"


def test_a_full_capacity_tube_answers_503_tube_full(env):
    mk(env, "small", "limfifottl", capacity=2)
    put(env, "small")
    put(env, "small")
    assert error_of(env.call("POST", "/api/v1/tubes/small/tasks", json={"data": 3})) == (503, "tube_full")
    assert env.ok("GET", "/api/v1/tubes/small")["stats"]["tasks"]["total"] == 2
