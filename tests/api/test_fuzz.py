"""Nothing a client sends gives a 500: hypothesis throws random bodies, parameters and
session headers at every route; every answer must be a success or a typed JSON error."""
import json

import orjson
import gevent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fiberapp.api.routes import ROUTES
from fiberapp.api.schemas import MAX_DURATION
from fiberapp.http.errors import BadRequest
from fiberapp.http.request import Request

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def dumps(value):
    # json, not orjson: it writes integers past 64 bits and lone surrogates, both of which
    # a client may send.
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


FIELD_NAMES = sorted({name for spec in ROUTES if spec.body is not None for name in spec.body.fields}
                     | {"tasks", "tubes", "zzz"})
bodies = st.one_of(
    st.binary(max_size=64),
    json_values.map(dumps),
    st.dictionaries(st.sampled_from(FIELD_NAMES), json_values, max_size=5).map(dumps),
    st.dictionaries(st.sampled_from(FIELD_NAMES), st.integers(-5, 5) | st.floats(-5, 5) | st.text(max_size=3),
                    max_size=4).map(dumps),
)
tube_names = st.sampled_from(["jobs", "other", "missing", "bad%20name", "x" * 250, "%ff", "a.b-c_d"])
task_ids = st.sampled_from(["1", "2", "3", "0", "-1", "99999999999999999999999999"])
sessions = st.one_of(st.none(), st.sampled_from(["s1", "s2"]), st.text(max_size=140))
queries = st.sampled_from(["", "state=ready", "limit=abc", "limit=-1", "state=%ff", "limit=" + "9" * 50,
                           "x=1", "state=taken&limit=2"])


def target(path, tube, task_id):
    return path.replace("{tube}", tube).replace("{id:int}", task_id)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=st.sampled_from(ROUTES), tube=tube_names, task_id=task_ids, body=bodies, session=sessions,
       query=queries)
def test_no_request_gives_a_500(env, spec, tube, task_id, body, session, query):
    if set(env.store.tubes()) != {"jobs", "other"}:
        for name in env.store.tubes():
            env.store.tube(name).truncate()
            env.store.drop_tube(name)
        env.ok("PUT", "/api/v1/tubes/jobs", json={"driver": "utubettl"}, status=201)
        env.ok("PUT", "/api/v1/tubes/other", json={"driver": "limfifottl", "options": {"capacity": 5}}, status=201)
        env.ok("POST", "/api/v1/tubes/jobs/tasks", json={"data": 1}, status=201)
    headers = [] if session is None else [(b"X-Fiberapp-Session", session.encode("utf-8", "surrogatepass"))]
    path = target(spec.path, tube, task_id)
    try:
        req = Request.build(spec.method, path + ("?" + query if query else ""), body=body)
    except BadRequest:
        return  # a path that is not UTF-8: the server answers 400 before routing (tests/http)
    req.raw_headers = list(req.raw_headers) + headers
    # A take may wait (on the FakeClock): run it in a fiber and move time past any timeout.
    fiber = gevent.spawn(env.router.dispatch, req)
    fiber.join(0)
    if not fiber.ready():
        env.clock.advance(MAX_DURATION + 1)
    resp = fiber.get(timeout=5)
    assert resp.status != 500, (spec.method, path, body, resp.body)
    if resp.status >= 400 and spec.path != "/health":
        err = orjson.loads(resp.body)["error"]
        assert isinstance(err["code"], str) and isinstance(err["message"], str)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(driver=st.sampled_from(["fifo", "fifottl", "limfifottl", "utube", "utubettl", "nope", ""]),
       options=st.dictionaries(st.sampled_from(["ttl", "ttr", "pri", "capacity", "max_attempts", "dead_letter",
                                                "delay", "utube", "x"]), json_values, max_size=4))
def test_no_tube_options_give_a_500(env, driver, options):
    for name in env.store.tubes():
        env.store.tube(name).truncate()
        env.store.drop_tube(name)
    resp = env.call("PUT", "/api/v1/tubes/t", body=dumps({"driver": driver, "options": options}))
    assert resp.status in (201, 400), (driver, options, resp.body)
    if resp.status == 201:
        for body in ({"data": 1}, {"data": 2, "pri": 1, "ttl": 5, "delay": 1}, {"tasks": [{"data": 3}]}):
            assert env.call("POST", "/api/v1/tubes/t/tasks", json=body).status in (200, 201, 400, 503)
        assert env.call("POST", "/api/v1/tubes/t/take", json={}).status in (200, 204)
