"""A tiny hand-written WSGI app mounted under a prefix, in-process and over a socket."""
import orjson

from fiberapp.http import Request, Router

from .helpers import get


def environ_app(environ, start_response):
    """Echoes the interesting parts of the environ as JSON; /fail raises; /status/N answers N."""
    path = environ["PATH_INFO"]
    if path.startswith("/status/"):
        start_response(f"{path[8:]} Whatever", [("Content-Type", "text/plain"), ("X-Custom", "yes")])
        return [b"status ", path[8:].encode()]
    if path == "/fail":
        raise ValueError("wsgi app bug")
    body = environ["wsgi.input"].read()
    doc = {k: environ.get(k) for k in ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING",
                                       "CONTENT_TYPE", "CONTENT_LENGTH", "HTTP_X_TOKEN", "SERVER_PROTOCOL")}
    doc["body"] = body.decode()

    class Closing(list):
        closed = False

        def close(self):
            calls.append("closed")

    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "999")])
    return Closing([orjson.dumps(doc)[:5], orjson.dumps(doc)[5:]])


calls = []


def mounted():
    r = Router()
    r.add("GET", "/native", lambda req: "native")
    r.mount("/legacy", environ_app, owner="wsgi")
    return r


def test_wsgi_environ_and_response_in_process():
    calls.clear()
    r = mounted()
    resp = r.dispatch(Request.build("POST", "/legacy/a/b?x=1", body=b"payload",
                                    headers={"Content-Type": "text/plain", "X-Token": "t1"}))
    assert resp.status == 200
    doc = resp.json_body()
    assert doc == {"REQUEST_METHOD": "POST", "SCRIPT_NAME": "/legacy", "PATH_INFO": "/a/b", "QUERY_STRING": "x=1",
                   "CONTENT_TYPE": "text/plain", "CONTENT_LENGTH": "7", "HTTP_X_TOKEN": "t1",
                   "SERVER_PROTOCOL": "HTTP/1.1", "body": "payload"}
    assert calls == ["closed"]  # the iterable's close() was called
    assert r.dispatch(Request.build("GET", "/native")).body == b"native"
    assert r.dispatch(Request.build("GET", "/legacy")).json_body()["PATH_INFO"] == ""


def test_wsgi_status_headers_and_errors():
    r = mounted()
    resp = r.dispatch(Request.build("DELETE", "/legacy/status/418"))
    assert (resp.status, resp.body, resp.content_type) == (418, b"status 418", "text/plain")
    assert resp.header("X-Custom") == "yes"
    assert r.dispatch(Request.build("GET", "/legacy/fail")).status == 500
    assert r.remove_owner("wsgi") == 2
    assert r.dispatch(Request.build("GET", "/legacy/x")).status == 404


def test_wsgi_over_a_socket(serve, connect):
    server = serve(mounted())
    c = connect(server)
    c.send(b"PUT /legacy/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" + get("/legacy/status/201"))
    first = c.read_response()
    assert first["status"] == 200
    doc = orjson.loads(first["body"])
    assert doc["body"] == "abc" and doc["CONTENT_LENGTH"] == "3" and doc["REQUEST_METHOD"] == "PUT"
    assert first["headers"]["content-length"] == str(len(first["body"]))  # the app's wrong length is not sent
    second = c.read_response()
    assert second["status"] == 201 and second["body"] == b"status 201"
