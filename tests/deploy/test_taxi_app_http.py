"""The taxi routes in-process (Router + Request.build, no sockets): the API the load
generator speaks, and bad input -> 4xx {"error": {"code", "message"}}, never a 500."""
import json

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deploy.taxi import handlers
from fiberapp.http.request import Request
from fiberapp.http.router import Router
from tests.deploy.test_taxi_app_dispatch import FAR, NEAR, Taxi


class Client:
    def __init__(self, taxi):
        self.taxi = taxi
        self.router = Router()

        def route(method, path, **options):
            def register(fn):
                self.router.add(method, path, fn, **options)
                return fn
            return register

        handlers.register(route, taxi.service)

    def call(self, method, target, body=None, raw=None):
        if raw is not None:
            request = Request.build(method, target, body=raw)
        else:
            request = Request.build(method, target, json=body) if body is not None else Request.build(method, target)
        response = self.router.dispatch(request)
        self.taxi.settle()
        data = orjson.loads(response.body) if response.body else None
        return response.status, data


@pytest.fixture
def client():
    taxi = Taxi()
    yield Client(taxi)
    taxi.close()


def order_body(at=NEAR):
    return {"client": "alice", "from": {"lat": at[0], "lon": at[1]}, "to": {"lat": FAR[0], "lon": FAR[1]}}


def test_a_ride_through_the_api(client):
    assert client.call("POST", "/taxi/drivers/7/location", {"lat": NEAR[0], "lon": NEAR[1], "status": "free"}) == (200, {"ok": True})
    status, body = client.call("POST", "/taxi/orders", order_body())
    assert status == 201
    oid = body["order"]["id"]
    assert body["order"]["state"] in ("created", "offered")
    status, body = client.call("GET", "/taxi/drivers/7/offer?timeout=0")
    assert status == 200 and body["offer"]["order_id"] == oid
    assert body["offer"]["from"] == {"lat": NEAR[0], "lon": NEAR[1]}
    assert client.call("GET", "/taxi/drivers/8/offer?timeout=0") == (204, None)
    status, body = client.call("POST", "/taxi/drivers/7/offer/accept", {"order_id": oid})
    assert status == 200 and body["order"]["state"] == "accepted" and body["order"]["driver"] == "7"
    assert client.call("POST", f"/taxi/orders/{oid}/arriving", {"driver": 7})[0] == 200
    status, body = client.call("POST", f"/taxi/orders/{oid}/complete", {"driver": "7"})
    assert status == 200 and body["order"]["state"] == "completed"
    status, body = client.call("GET", f"/taxi/orders/{oid}")
    assert body["order"]["state"] == "completed"
    status, stats = client.call("GET", "/taxi/stats")
    assert status == 200
    assert stats["orders"]["completed"] == 1
    assert stats["drivers"] == {"online": 1, "free": 1}
    assert set(stats["dispatch_latency"]) >= {"p50", "p95", "p99"}


def test_the_location_answer_carries_the_presented_offer(client):
    # Drivers that share a connection cannot park a long-poll: they learn of an offer
    # from their next ping, which shows the same offer the long-poll would.
    client.call("POST", "/taxi/drivers/7/location", {"lat": NEAR[0], "lon": NEAR[1]})
    _, body = client.call("POST", "/taxi/orders", order_body())
    oid = body["order"]["id"]
    status, body = client.call("POST", "/taxi/drivers/7/location", {"lat": NEAR[0], "lon": NEAR[1]})
    assert status == 200 and body["ok"] is True
    assert body["offer"]["order_id"] == oid and body["offer"]["from"] == {"lat": NEAR[0], "lon": NEAR[1]}
    assert body["offer"] == client.call("GET", "/taxi/drivers/7/offer?timeout=0")[1]["offer"]
    assert client.call("POST", "/taxi/drivers/8/location", {"lat": FAR[0], "lon": FAR[1]}) == (200, {"ok": True})
    client.call("POST", "/taxi/drivers/7/offer/accept", {"order_id": oid})
    status, body = client.call("POST", "/taxi/drivers/7/location", {"lat": NEAR[0], "lon": NEAR[1], "status": "busy"})
    assert (status, body) == (200, {"ok": True})  # accepted: no offer any more


def test_cancel_with_and_without_a_reason(client):
    _, body = client.call("POST", "/taxi/orders", order_body())
    status, body = client.call("POST", f"/taxi/orders/{body['order']['id']}/cancel")
    assert status == 200 and body["order"]["state"] == "cancelled"
    assert body["order"]["reason"] == handlers.DEFAULT_CANCEL_REASON
    _, body = client.call("POST", "/taxi/orders", order_body())
    status, body = client.call("POST", f"/taxi/orders/{body['order']['id']}/cancel", {"reason": "late"})
    assert body["order"]["reason"] == "late"


@pytest.mark.parametrize("method, target, body, status, code", [
    ("POST", "/taxi/orders", None, 400, "bad_request"),
    ("POST", "/taxi/orders", [], 400, "bad_request"),
    ("POST", "/taxi/orders", {"client": "a"}, 400, "bad_request"),
    ("POST", "/taxi/orders", {"client": "a", "from": {"lat": 91, "lon": 0}, "to": {"lat": 0, "lon": 0}}, 400, "bad_request"),
    ("POST", "/taxi/orders", {"client": "a", "from": {"lat": True, "lon": 0}, "to": {"lat": 0, "lon": 0}}, 400, "bad_request"),
    ("POST", "/taxi/drivers/1/location", {"lat": "x", "lon": 0}, 400, "bad_request"),
    ("POST", "/taxi/drivers/1/location", {"lat": 1, "lon": 1, "status": "asleep"}, 400, "bad_request"),
    ("POST", "/taxi/drivers/1/location", {"lat": float("nan"), "lon": 1}, 400, "bad_request"),
    ("POST", "/taxi/drivers/" + "x" * 101 + "/location", {"lat": 1, "lon": 1}, 400, "bad_request"),
    ("GET", "/taxi/drivers/1/offer?timeout=-1", None, 400, "bad_request"),
    ("GET", "/taxi/drivers/1/offer?timeout=abc", None, 400, "bad_request"),
    ("GET", "/taxi/drivers/1/offer?timeout=nan", None, 400, "bad_request"),
    ("GET", "/taxi/drivers/1/offer?timeout=1e9", None, 400, "bad_request"),
    ("POST", "/taxi/drivers/1/offer/accept", {"order_id": "1"}, 400, "bad_request"),
    ("POST", "/taxi/drivers/1/offer/accept", {"order_id": 12345}, 409, "no_offer"),
    ("POST", "/taxi/drivers/1/offer/decline", {}, 400, "bad_request"),
    ("GET", "/taxi/orders/999", None, 404, "unknown_order"),
    ("POST", "/taxi/orders/999/cancel", {"reason": "x"}, 404, "unknown_order"),
    ("POST", "/taxi/orders/999/arriving", {"driver": "1"}, 404, "unknown_order"),
    ("POST", "/taxi/orders/999/complete", {}, 400, "bad_request"),
])
def test_bad_input_gets_a_typed_4xx(client, method, target, body, status, code):
    if isinstance(body, dict) and any(isinstance(v, float) and v != v for v in body.values()):
        got = client.call(method, target, raw=b'{"lat": NaN, "lon": 1}')
    else:
        got = client.call(method, target, body)
    assert got[0] == status, got
    assert got[1]["error"]["code"] == code and got[1]["error"]["message"]


def test_state_conflicts_are_409_and_wrong_driver_403(client):
    client.call("POST", "/taxi/drivers/7/location", {"lat": NEAR[0], "lon": NEAR[1]})
    _, body = client.call("POST", "/taxi/orders", order_body())
    oid = body["order"]["id"]
    status, body = client.call("POST", f"/taxi/orders/{oid}/complete", {"driver": "7"})
    assert status == 409 and body["error"]["code"] == "invalid_transition"  # offered, not arriving
    client.call("POST", "/taxi/drivers/7/offer/accept", {"order_id": oid})
    status, body = client.call("POST", f"/taxi/orders/{oid}/arriving", {"driver": "8"})
    assert status == 403 and body["error"]["code"] == "wrong_driver"
    status, body = client.call("POST", f"/taxi/orders/{oid}/complete", {"driver": "7"})
    assert status == 409 and body["error"]["code"] == "invalid_transition"
    client.call("POST", f"/taxi/orders/{oid}/cancel", {"reason": "x"})
    status, body = client.call("POST", f"/taxi/orders/{oid}/cancel", {"reason": "x"})
    assert status == 409


def test_a_body_that_is_not_json_is_400(client):
    status, body = client.call("POST", "/taxi/orders", raw=b"{nope")
    assert status == 400 and body["error"]["code"] == "bad_request"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({}, optional={
        "client": json_values, "from": json_values, "to": json_values, "lat": json_values,
        "lon": json_values, "status": json_values, "order_id": json_values, "driver": json_values,
        "reason": json_values}))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=st.sampled_from(["/taxi/orders", "/taxi/drivers/d/location", "/taxi/drivers/d/offer/accept",
                               "/taxi/drivers/d/offer/decline", "/taxi/orders/1/cancel",
                               "/taxi/orders/1/arriving", "/taxi/orders/1/complete"]),
       body=bodies)
def test_nothing_a_client_sends_is_a_500(client, target, body):
    status, data = client.call("POST", target, raw=json.dumps(body).encode())
    assert status < 500, (target, body, data)
    if status >= 400:
        assert set(data["error"]) == {"code", "message"}
