import pytest
from prometheus_client import CollectorRegistry

from fiberapp.http import HTTPServer, Router
from fiberapp.runtime.clock import FakeClock

from .helpers import RawClient


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def registry():
    return CollectorRegistry()


@pytest.fixture
def serve(clock, registry):
    """serve(router, **config) -> a started server on 127.0.0.1:0 with the FakeClock."""
    servers = []

    def start(router, **config):
        server = HTTPServer(router, "127.0.0.1", 0, clock=clock, registry=registry, **config)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(timeout=0)


@pytest.fixture
def connect():
    clients = []

    def open_client(server):
        client = RawClient(server.address)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close()


@pytest.fixture
def router():
    return Router()
