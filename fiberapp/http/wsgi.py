"""Mount any WSGI application (PEP 3333: Flask, Django, ...) under a path prefix.

    router.mount("/legacy", flask_app)

The request's body is already read (the server enforces max_body_size), so wsgi.input is
a BytesIO. The application's response is collected in full before it is sent: streaming
and server-push WSGI responses are buffered, which is fine for the admin-style apps this
is for and wrong for a long-lived stream. The app runs in the connection's fiber like
any handler; it must not block the loop (it is gevent-patched code like the rest).
"""
import io
import sys

from .response import Response


class WSGIHandler:
    """A route handler that calls a WSGI app. SCRIPT_NAME is the prefix, PATH_INFO the rest."""

    def __init__(self, app, prefix="", server_name="fiberapp", url_scheme="http"):
        self.app = app
        self.prefix = prefix.rstrip("/")
        self.server_name = server_name
        self.url_scheme = url_scheme

    def environ(self, request):
        path = request.path
        if self.prefix and path.startswith(self.prefix):
            path = path[len(self.prefix):]
        remote = request.remote_addr
        env = {
            "REQUEST_METHOD": request.method,
            "SCRIPT_NAME": self.prefix,
            # PEP 3333: PATH_INFO carries the decoded bytes as latin-1 code points.
            "PATH_INFO": path.encode("utf-8").decode("latin-1"),
            "QUERY_STRING": request.query_string,
            "SERVER_NAME": self.server_name,
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/" + request.version,
            "REMOTE_ADDR": remote[0] if remote else "",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": self.url_scheme,
            "wsgi.input": io.BytesIO(request.body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "fiberapp.request": request,
        }
        for name, value in request.raw_headers:
            key = name.decode("latin-1").upper().replace("-", "_")
            val = value.decode("latin-1")
            if key == "CONTENT_TYPE" or key == "CONTENT_LENGTH":
                env[key] = val
                continue
            if key == "HOST":
                host, _, port = val.partition(":")
                env["SERVER_NAME"] = host or self.server_name
                if port:
                    env["SERVER_PORT"] = port
            key = "HTTP_" + key
            env[key] = f"{env[key]},{val}" if key in env else val
        if "CONTENT_LENGTH" not in env and request.body:
            env["CONTENT_LENGTH"] = str(len(request.body))  # a chunked body, now complete
        return env

    def __call__(self, request):
        state = {}
        chunks = []

        def start_response(status, headers, exc_info=None):
            if exc_info is not None:
                try:
                    if state.get("sent"):
                        raise exc_info[1].with_traceback(exc_info[2])
                finally:
                    exc_info = None
            elif "status" in state:
                raise AssertionError("start_response called twice without exc_info")
            state["status"] = status
            state["headers"] = headers
            return chunks.append

        result = self.app(self.environ(request), start_response)
        try:
            for chunk in result:
                if chunk:
                    state["sent"] = True
                    chunks.append(chunk)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        if "status" not in state:
            raise RuntimeError("the WSGI application did not call start_response")
        status = int(state["status"].split(" ", 1)[0])
        content_type = None
        headers = []
        for name, value in state["headers"]:
            lname = name.lower()
            if lname == "content-type":
                content_type = value
            elif lname not in ("content-length", "connection", "transfer-encoding", "date"):
                # framing headers are the server's: it sends the collected body with its own
                headers.append((name, value))
        return Response(b"".join(chunks), status, headers, content_type)
