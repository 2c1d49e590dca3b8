"""The router and handlers in-process: constructed Requests, no sockets."""
import uuid

import pytest

from fiberapp.http import (
    BadRequest, MethodNotAllowed, NotFound, Request, Response, RouteError, Router, to_response,
)


def call(router, method, target, **kw):
    return router.dispatch(Request.build(method, target, **kw))


@pytest.fixture
def router():
    r = Router()

    @r.get("/api/v1/tubes/{tube}/tasks/{id:int}")
    def get_task(req):
        return {"tube": req.params["tube"], "id": req.params["id"]}

    @r.route("/files/{rest:path}", methods=("GET", "PUT"))
    def files(req):
        return req.params["rest"]

    @r.get("/u/{u:uuid}")
    def by_uuid(req):
        return {"u": str(req.params["u"]), "type": type(req.params["u"]).__name__}

    @r.get("/f/{x:float}")
    def by_float(req):
        return {"x": req.params["x"]}

    @r.post("/echo")
    def echo(req):
        return req.body

    return r


def test_typed_params_are_converted(router):
    resp = call(router, "GET", "/api/v1/tubes/jobs/tasks/42")
    assert resp.status == 200
    assert resp.json_body() == {"tube": "jobs", "id": 42}
    u = uuid.uuid4()
    assert call(router, "GET", f"/u/{u}").json_body() == {"u": str(u), "type": "UUID"}
    assert call(router, "GET", "/f/2.5").json_body() == {"x": 2.5}


def test_a_param_that_does_not_convert_is_no_match(router):
    assert call(router, "GET", "/api/v1/tubes/jobs/tasks/abc").status == 404
    assert call(router, "GET", "/u/not-a-uuid").status == 404


def test_percent_encoded_segments_are_decoded_before_matching(router):
    resp = call(router, "GET", "/api/v1/tubes/caf%C3%A9/tasks/1")
    assert resp.json_body()["tube"] == "café"


def test_path_param_takes_the_rest(router):
    assert call(router, "GET", "/files/a/b/c.txt").body == b"a/b/c.txt"
    assert call(router, "PUT", "/files/x").status == 200


def test_404_and_405_with_allow(router):
    resp = call(router, "GET", "/nowhere")
    assert resp.status == 404
    assert resp.json_body()["error"]["code"] == "not_found"
    resp = call(router, "DELETE", "/api/v1/tubes/t/tasks/1")
    assert resp.status == 405
    assert resp.header("Allow") == "GET, HEAD"
    resp = call(router, "GET", "/echo")
    assert resp.status == 405 and resp.header("Allow") == "POST"


def test_head_falls_back_to_get(router):
    resp = call(router, "HEAD", "/api/v1/tubes/t/tasks/3")
    assert resp.status == 200 and resp.json_body() == {"tube": "t", "id": 3}


@pytest.mark.parametrize("value, status, ctype, body", [
    ({"a": 1}, 200, b"application/json", b'{"a":1}'),
    ([1, 2], 200, b"application/json", b"[1,2]"),
    ("héllo", 200, b"text/plain; charset=utf-8", "héllo".encode()),
    (b"\x00\x01", 200, b"application/octet-stream", b"\x00\x01"),
    (None, 204, None, b""),
    (({"created": True}, 201), 201, b"application/json", b'{"created":true}'),
])
def test_return_values_become_responses(value, status, ctype, body):
    r = Router()
    r.add("GET", "/x", lambda req: value)
    resp = call(r, "GET", "/x")
    assert (resp.status, resp.content_type, resp.body) == (status, ctype, body)


def test_an_unsupported_return_value_is_a_500(caplog):
    r = Router()
    r.add("GET", "/x", lambda req: 3.14)
    assert call(r, "GET", "/x").status == 500
    assert "returned float" in caplog.text


def test_a_raising_handler_gives_500_and_is_logged(caplog):
    r = Router()

    def boom(req):
        raise ZeroDivisionError("oops")

    r.add("GET", "/boom", boom)
    resp = call(r, "GET", "/boom")
    assert resp.status == 500
    assert resp.json_body() == {"error": {"code": "internal_error", "message": "internal server error"}}
    assert "ZeroDivisionError" in caplog.text  # the traceback is in the log, not the reply


def test_http_errors_and_the_error_map():
    class TubeMissing(LookupError):
        pass

    class SpecialMissing(TubeMissing):
        pass

    r = Router()
    r.errors.register(TubeMissing, 404, "no_such_tube")
    r.errors.register(SpecialMissing, 410)

    def raiser(exc):
        def handler(req):
            raise exc
        return handler

    r.add("GET", "/a", raiser(TubeMissing("tube x")))
    r.add("GET", "/b", raiser(SpecialMissing("gone")))
    r.add("GET", "/c", raiser(BadRequest("bad thing")))
    assert (call(r, "GET", "/a").status, call(r, "GET", "/a").json_body()) == (404, {"error": {"code": "no_such_tube", "message": "tube x"}})
    assert call(r, "GET", "/b").status == 410 and call(r, "GET", "/b").json_body()["error"]["code"] == "special_missing"
    assert call(r, "GET", "/c").json_body() == {"error": {"code": "bad_request", "message": "bad thing"}}


def test_middleware_is_applied_once_per_route_in_order():
    log = []
    applied = []

    def tag(name):
        def mw(handler):
            applied.append(name)

            def wrapped(req):
                log.append(name)
                return handler(req)
            return wrapped
        return mw

    r = Router(middleware=[tag("router")])
    r.add("GET", "/x", lambda req: log.append("handler") or "ok", middleware=[tag("outer"), tag("inner")])
    assert applied == ["inner", "outer", "router"]  # wrapping happened at add time
    for _ in range(3):
        assert call(r, "GET", "/x").body == b"ok"
    assert applied == ["inner", "outer", "router"]  # and never again
    assert log[:4] == ["router", "outer", "inner", "handler"]


def test_remove_owner_drops_only_that_owners_routes():
    r = Router()
    r.add("GET", "/a", lambda req: "a", owner="script1")
    r.add(("GET", "POST"), "/b/{id:int}", lambda req: "b", owner="script1")
    r.add("GET", "/c", lambda req: "c", owner="script2")
    assert r.remove_owner("script1") == 3
    assert call(r, "GET", "/a").status == 404
    assert call(r, "GET", "/b/1").status == 404
    assert call(r, "GET", "/c").body == b"c"
    r.add("GET", "/a", lambda req: "a2", owner="script1")  # a reloaded script can add them back
    assert call(r, "GET", "/a").body == b"a2"


def test_duplicate_routes_and_bad_patterns_are_refused():
    r = Router()
    r.add("GET", "/x/{id:int}", lambda req: 1)
    with pytest.raises(RouteError):
        r.add("GET", "/x/{id:int}", lambda req: 2)
    with pytest.raises(RouteError):
        r.add(("POST", "GET"), "/x/{id:int}", lambda req: 2)
    assert call(r, "POST", "/x/1").status == 405  # the failed multi-method add left nothing behind
    for bad in ("x", "/a/{id:nope}", "/a/{p:path}/b", "/a/{x}/{x}", "/a/{unclosed"):
        with pytest.raises(RouteError):
            r.add("GET", bad, lambda req: 1)


def test_any_method_route():
    r = Router()
    r.add("*", "/any/{rest:path}", lambda req: req.method)
    assert call(r, "PATCH", "/any/x").body == b"PATCH"
    assert call(r, "DELETE", "/any/y/z").body == b"DELETE"


def test_request_helpers():
    req = Request.build("POST", "/p?a=1&b=2&a=3&e=", headers={"X-Thing": "v", "Content-Type": "application/json; charset=utf-8"},
                        body=b'{"k": [1]}')
    assert req.query == {"a": "3", "b": "2", "e": ""}
    assert req.query_all()["a"] == ["1", "3"]
    assert req.header("x-thing") == "v" and req.headers["x-thing"] == "v"
    assert req.content_type == "application/json"
    assert req.json() == {"k": [1]}
    assert not req.disconnected()
    with pytest.raises(BadRequest):
        Request.build("POST", "/p", body=b"{nope").json()
    with pytest.raises(BadRequest):
        Request.build("POST", "/p").json()
    with pytest.raises(BadRequest):
        Request.build("GET", "/%ff")
    with pytest.raises(BadRequest):
        Request.build("GET", "/p?x=%ff").query


def test_bad_query_string_in_a_handler_is_a_400_not_a_500():
    r = Router()
    r.add("GET", "/q", lambda req: req.query)
    assert call(r, "GET", "/q?x=%ff").status == 400


def test_to_response_passes_responses_through():
    resp = Response.json({"a": 1}, 202, headers=[("X-A", "1")])
    assert to_response(resp) is resp
    assert NotFound().status == 404
    assert MethodNotAllowed({"GET"}).headers == (("Allow", "GET"),)
