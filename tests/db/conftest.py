"""Fixtures for the PostgreSQL/Redis/TCP tests: real servers, a real-time Runtime."""
import itertools
import os

import gevent
import pytest

from fiberapp.runtime.fiber import Runtime
from tests import services
from tests.waiting import wait_for  # noqa: F401  (re-exported for the tests here)

_names = itertools.count()


@pytest.fixture
def runtime():
    rt = Runtime(watchdog_limit=0, cpu_accounting=False)
    rt.start()
    yield rt
    assert rt.stop(timeout=5) == []


@pytest.fixture
def pg_dsn():
    return services.pg_dsn()


@pytest.fixture
def redis_url():
    return services.redis_url()


@pytest.fixture
def app_name():
    """A unique application_name, so a test can find its own sessions in pg_stat_activity."""
    return f"fiberapp-test-{os.getpid()}-{next(_names)}"


@pytest.fixture
def pg(pg_dsn, runtime, app_name):
    from fiberapp.db.pg import PgPool

    pool = PgPool(pg_dsn, runtime=runtime, min_size=1, max_size=10, max_wait=5.0, application_name=app_name)
    pool.open(wait=True)
    yield pool
    pool.close()


@pytest.fixture
def admin(pg_dsn):
    """A plain autocommit connection for looking at the server from outside the pool."""
    import psycopg

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def redis(redis_url, runtime, app_name):
    from fiberapp.db.redis import RedisClient

    client = RedisClient(redis_url, runtime=runtime, max_connections=10, socket_timeout=5.0, client_name=app_name)
    client.open(wait=True)
    yield client
    client.close()


class Ticker:
    """A fiber that wakes every `period` seconds and records the largest gap between
    wake-ups: if anything blocked the loop, the gap shows it. ticks() counts wake-ups,
    so a test can prove the loop ran while something else was in progress."""

    def __init__(self, runtime, period=0.005):
        self.period = period
        self.count = 0
        self.max_gap = 0.0
        self._clock = runtime.clock
        self._fiber = runtime.spawn(self._run, name="test-ticker")

    def _run(self):
        last = self._clock.monotonic()
        while True:
            gevent.sleep(self.period)
            now = self._clock.monotonic()
            self.max_gap = max(self.max_gap, now - last)
            last = now
            self.count += 1

    def stop(self):
        self._fiber.cancel()
        gevent.joinall([self._fiber])


@pytest.fixture
def ticker(runtime):
    t = Ticker(runtime)
    yield t
    t.stop()


def active_queries(admin, app_name, like):
    """How many of our sessions are running a query matching `like` right now."""
    return admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND state = 'active' AND query LIKE %s",
        (app_name, like),
    ).fetchone()[0]
