"""install(router, app=...) reads the store at request time: the app installs the API
before its store has recovered."""
from prometheus_client import CollectorRegistry

from fiberapp.api import install
from fiberapp.http.request import Request
from fiberapp.http.router import Router


class FakeConfig:
    api_token = None
    session_ttl = 30.0


class AppShape:
    """Only the attributes install() reads from the lead's App; the store arrives later."""

    def __init__(self, runtime, clock):
        self.runtime = runtime
        self.clock = clock
        self.registry = CollectorRegistry()
        self.config = FakeConfig()
        self.store = None
        self.persistence = None
        self.state = "recovering"

    def health(self):
        return (200, {"status": "ok"}) if self.state == "running" else (503, {"status": self.state})


def test_routes_answer_503_until_the_store_exists(runtime, clock, store):
    app = AppShape(runtime, clock)
    router = Router()
    api = install(router, app=app)
    try:
        call = lambda m, t, **kw: router.dispatch(Request.build(m, t, **kw))  # noqa: E731
        resp = call("GET", "/api/v1/tubes")
        assert resp.status == 503 and resp.json_body()["error"]["code"] == "recovering"
        assert call("GET", "/health").status == 503
        assert call("GET", "/metrics").status == 200
        app.store, app.state = store, "running"
        assert call("PUT", "/api/v1/tubes/t", json={"driver": "fifo"}).status == 201
        assert call("GET", "/health").json_body() == {"status": "ok"}
        assert api.sessions.ttl == 30.0
        assert "fiberapp_queue_tasks" in call("GET", "/metrics").body.decode()
    finally:
        api.stop()
