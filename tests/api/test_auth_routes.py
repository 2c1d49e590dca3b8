"""Auth through the routes: on (every /api/v1 request needs the bearer token) and off."""
import pytest

from .conftest import error_of

AUTH = {"Authorization": "Bearer tok-123"}


@pytest.fixture
def secured(make_env):
    return make_env(api_token="tok-123")


@pytest.mark.parametrize("method,target", [
    ("GET", "/api/v1/tubes"), ("PUT", "/api/v1/tubes/x"), ("POST", "/api/v1/tubes/x/tasks"),
    ("POST", "/api/v1/tubes/x/take"), ("GET", "/api/v1/openapi.json"), ("GET", "/api/v1/fibers"),
    ("POST", "/api/v1/snapshot"), ("GET", "/api/v1/no/such/route"), ("DELETE", "/api/v1/tubes/x/tasks/1"),
])
def test_every_api_route_needs_the_token(secured, method, target):
    for headers in (None, {"Authorization": "Bearer wrong"}, {"Authorization": "tok-123"},
                    {"Authorization": "Basic dG9rLTEyMw=="}):
        resp = secured.call(method, target, json={}, headers=headers)
        assert error_of(resp) == (401, "unauthorized"), (method, target, headers)


def test_the_right_token_gets_through_and_nothing_changed_before(secured):
    assert secured.call("PUT", "/api/v1/tubes/x", json={"driver": "fifo"}).status == 401
    assert secured.ok("GET", "/api/v1/tubes", headers=AUTH) == {"tubes": []}
    secured.ok("PUT", "/api/v1/tubes/x", json={"driver": "fifo"}, headers=AUTH, status=201)


def test_health_and_metrics_stay_open(secured):
    assert secured.call("GET", "/health").status == 200
    assert secured.call("GET", "/metrics").status == 200


def test_auth_off_needs_no_header(env):
    assert env.ok("GET", "/api/v1/tubes") == {"tubes": []}
    assert env.ok("GET", "/api/v1/tubes", headers={"Authorization": "Bearer anything"}) == {"tubes": []}


def test_token_from_config(make_env):
    class Cfg:
        api_token = "from-config"
        session_ttl = 5.0

    e = make_env(config=Cfg())
    assert e.call("GET", "/api/v1/tubes").status == 401
    assert e.call("GET", "/api/v1/tubes", headers={"Authorization": "Bearer from-config"}).status == 200
    assert e.api.sessions.ttl == 5.0
