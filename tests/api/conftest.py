"""Fixtures: a real store, runtime and router on a FakeClock, with the API installed.

``env.call(method, target, json=..., headers=...)`` runs a request in-process (no socket)
and returns the Response; ``env.serve()`` starts a real HTTP server on port 0 for the
socket tests.
"""
import gevent
import orjson
import pytest
from prometheus_client import CollectorRegistry

from fiberapp.api import install
from fiberapp.http.request import Request
from fiberapp.http.router import Router
from fiberapp.http.server import HTTPServer
from fiberapp.runtime.clock import FakeClock
from fiberapp.runtime.fiber import Runtime
from queues.store import Store
from tests.waiting import wait_for  # noqa: F401  (re-exported for the tests here)


class Env:
    def __init__(self, clock, runtime, store, **options):
        self.clock = clock
        self.runtime = runtime
        self.store = store
        self.router = Router()
        self.registry = CollectorRegistry()
        self.api = install(self.router, store=store, runtime=runtime, clock=clock,
                           registry=self.registry, **options)
        self.servers = []

    def call(self, method, target, json=None, headers=None, body=b""):
        req = Request.build(method, target, json=json, headers=headers, body=body)
        return self.router.dispatch(req)

    def ok(self, method, target, json=None, headers=None, status=200):
        resp = self.call(method, target, json=json, headers=headers)
        assert resp.status == status, (resp.status, resp.body)
        return orjson.loads(resp.body) if resp.body else None

    def serve(self, **knobs):
        # The server's own timeouts run on real time: this clock is for the store.
        # One registry takes one server's metrics: later servers of this env go without.
        registry = None if self.servers else self.registry
        server = HTTPServer(self.router, "127.0.0.1", 0, registry=registry, **knobs)
        server.start()
        self.servers.append(server)
        return server.address

    def close(self):
        for server in self.servers:
            server.stop(1.0)
        self.api.stop()


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def runtime(clock):
    rt = Runtime(clock=clock, cpu_accounting=False)
    yield rt
    rt.stop(timeout=1.0)


@pytest.fixture
def store(clock, runtime):
    s = Store(clock=clock)
    s.start(runtime)
    yield s
    s.stop()


@pytest.fixture
def env(clock, runtime, store):
    e = Env(clock, runtime, store)
    yield e
    e.close()


@pytest.fixture
def make_env(clock, runtime, store):
    made = []

    def make(**options):
        e = Env(clock, runtime, store, **options)
        made.append(e)
        return e

    yield make
    for e in made:
        e.close()


def error_of(resp):
    body = orjson.loads(resp.body)
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return resp.status, body["error"]["code"]


