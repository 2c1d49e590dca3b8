"""tests/services.py: an unreachable server skips the test, or fails it when CI=true."""
import socket

import pytest

from tests import services


@pytest.fixture
def dead_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("ci, outcome", [("", pytest.skip.Exception), ("true", pytest.fail.Exception)])
def test_unreachable_services_skip_or_fail(monkeypatch, dead_port, ci, outcome):
    monkeypatch.setenv("CI", ci)
    monkeypatch.setenv("FIBERAPP_TEST_PG_DSN", f"postgresql://postgres@127.0.0.1:{dead_port}/test")
    monkeypatch.setenv("FIBERAPP_TEST_REDIS_URL", f"redis://127.0.0.1:{dead_port}/0")
    with pytest.raises(outcome) as info:
        services.pg_dsn()
    assert f"127.0.0.1:{dead_port}" in str(info.value) and "not reachable" in str(info.value)
    with pytest.raises(outcome):
        services.redis_url()


def test_reachable_services_return_the_address(monkeypatch, pg_dsn, redis_url):
    # pg_dsn / redis_url fixtures already went through services; the overrides are honoured
    monkeypatch.setenv("FIBERAPP_TEST_PG_DSN", pg_dsn)
    monkeypatch.setenv("FIBERAPP_TEST_REDIS_URL", redis_url)
    assert services.pg_dsn() == pg_dsn and services.redis_url() == redis_url
