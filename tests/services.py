"""Where the test suite finds the real PostgreSQL and Redis, for every test directory.

pg_dsn() / redis_url() return the address to use (FIBERAPP_TEST_PG_DSN /
FIBERAPP_TEST_REDIS_URL override the loopback defaults) after checking that the server
answers. When it does not, the calling test is skipped with the reason, or fails when
CI=true: CI must not go green by skipping the database tests.

Call them from a fixture (they call pytest.skip/pytest.fail). The probe result is
cached per process, so an unreachable server costs one connect timeout, not one per test.
"""
import functools
import os

import pytest

DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def _unavailable(what, reason):
    message = f"{what} is not reachable ({reason})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}; CI=true requires it", pytrace=False)
    pytest.skip(message)


@functools.lru_cache(maxsize=None)
def _probe_pg(dsn):
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # any failure means "not usable"; the reason is reported
        return f"{type(exc).__name__}: {str(exc).strip()}"
    return None


@functools.lru_cache(maxsize=None)
def _probe_redis(url):
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
    return None


def pg_dsn():
    """The PostgreSQL DSN for tests; skips (or fails on CI) when it does not answer."""
    dsn = os.environ.get("FIBERAPP_TEST_PG_DSN") or DEFAULT_PG_DSN
    reason = _probe_pg(dsn)
    if reason is not None:
        _unavailable(f"PostgreSQL at {dsn}", reason)
    return dsn


def redis_url():
    """The Redis URL for tests; skips (or fails on CI) when it does not answer."""
    url = os.environ.get("FIBERAPP_TEST_REDIS_URL") or DEFAULT_REDIS_URL
    reason = _probe_redis(url)
    if reason is not None:
        _unavailable(f"Redis at {url}", reason)
    return url
