"""Dispatch under the FakeClock, in-process: the real store, tubes and fibers, no sockets,
no PostgreSQL (the history writer's fiber is not started; its tube is inspected)."""
import gevent
import pytest

from deploy.taxi import orders as om
from deploy.taxi.dispatch import NoOffer
from deploy.taxi.errors import BadRequest, InvalidTransition, WrongDriver
from deploy.taxi.service import TaxiService
from deploy.taxi.settings import Settings
from fiberapp.runtime.clock import FakeClock
from fiberapp.runtime.fiber import Runtime
from queues.store import Store

HERE = (55.750, 37.620)
NEAR = (55.751, 37.621)   # ~130 m from HERE
FAR = (55.760, 37.640)    # ~1.6 km from HERE


class Taxi:
    def __init__(self, **settings):
        self.clock = FakeClock()
        self.runtime = Runtime(clock=self.clock, cpu_accounting=False)
        self.store = Store(clock=self.clock)
        self.store.start(self.runtime)
        self.settings = Settings(**settings)
        self.service = TaxiService(self.store, None, self.clock, self.settings)
        d = self.service.dispatcher
        self.fibers = [self.runtime.spawn(fn, name=fn.__name__)
                       for fn in (d.run_dispatcher, d.run_desk, d.run_expiry)]
        self.settle()

    def settle(self):
        self.clock.advance(0)

    def advance(self, seconds):
        self.clock.advance(seconds)

    def driver(self, driver_id, point, status="free"):
        self.service.location(driver_id, {"lat": point[0], "lon": point[1], "status": status})

    def order(self, at=HERE):
        order = self.service.create_order({"client": "c", "from": {"lat": at[0], "lon": at[1]},
                                           "to": {"lat": FAR[0], "lon": FAR[1]}})
        self.settle()
        return order

    def offer_for(self, driver_id):
        return self.service.poll_offer(driver_id, 0)

    def events(self, order_id):
        """(from, to, driver, reason) of every recorded event of the order, in order."""
        out = []
        for task in self.service.history.tube.tasks(limit=None):
            _, _, event = task.data
            if event[0] == order_id:
                out.append((event[1], event[2], event[4], event[5]))
        return out

    def close(self):
        for fiber in self.fibers:
            fiber.cancel()
        self.store.stop()
        gevent.joinall(self.fibers, timeout=1)


@pytest.fixture
def taxi():
    t = Taxi(accept_timeout=60.0, offer_ttr=15.0, retry_delay=1.0)
    yield t
    t.close()


def test_order_goes_to_the_nearest_free_driver_and_is_accepted(taxi):
    taxi.driver("far", FAR)
    taxi.driver("near", NEAR)
    order = taxi.order()
    assert order.state == om.OFFERED and order.driver == "near"
    assert taxi.offer_for("far") is None
    offer = taxi.offer_for("near")
    assert offer["order_id"] == order.id and offer["expires_in"] == pytest.approx(15.0)
    taxi.advance(3.0)
    taxi.service.accept("near", order.id)
    assert order.state == om.ACCEPTED and order.driver == "near"
    assert taxi.service.geo.get("near", taxi.clock.monotonic()).status == "busy"
    assert taxi.offer_for("near") is None
    stats = taxi.service.stats()
    assert stats["orders"]["accepted"] == 1
    assert stats["dispatch_latency"]["count"] == 1
    assert stats["dispatch_latency"]["p50"] == pytest.approx(3.0, rel=0.05)
    assert taxi.events(order.id) == [(None, "created", None, None), ("created", "offered", "near", None),
                                     ("offered", "accepted", "near", None)]


def test_declined_offer_goes_to_the_next_nearest_driver(taxi):
    taxi.driver("near", NEAR)
    taxi.driver("far", FAR)
    order = taxi.order()
    assert order.driver == "near"
    taxi.service.decline("near", order.id)
    taxi.settle()
    assert order.state == om.OFFERED and order.driver == "far"
    assert taxi.offer_for("far")["order_id"] == order.id
    assert taxi.offer_for("near") is None
    # The decliner is not asked again, even as the only free driver left.
    taxi.service.decline("far", order.id)
    taxi.advance(5.0)
    assert order.state == om.CREATED and order.declined == {"near", "far"}
    assert [e[:3] for e in taxi.events(order.id)] == [
        (None, "created", None), ("created", "offered", "near"), ("offered", "created", "near"),
        ("created", "offered", "far"), ("offered", "created", "far")]


def test_expired_offer_goes_to_the_next_driver(taxi):
    taxi.driver("near", NEAR)
    taxi.driver("far", FAR)
    order = taxi.order()
    assert order.driver == "near"
    taxi.advance(14.9)
    taxi.driver("near", NEAR)  # still pinging, just not answering
    taxi.driver("far", FAR)
    assert order.driver == "near"
    taxi.advance(0.2)  # the ttr lapses: the store dead-letters the offer, expiry re-dispatches
    assert order.state == om.OFFERED and order.driver == "far"
    assert taxi.offer_for("near") is None
    assert taxi.offer_for("far")["order_id"] == order.id
    with pytest.raises(NoOffer):
        taxi.service.accept("near", order.id)  # too late
    assert ("offered", "created", "near", None) in taxi.events(order.id)
    assert taxi.service.stats()["dispatch"]["offers_expired"] == 1


def test_order_nobody_accepts_is_cancelled_at_the_configured_time():
    taxi = Taxi(accept_timeout=40.0, offer_ttr=15.0, retry_delay=1.0)
    try:
        taxi.driver("lazy", NEAR)
        order = taxi.order()
        assert order.driver == "lazy"
        # lazy lets it expire (t=15); nobody else is free; drivers keep pinging.
        for _ in range(39):
            taxi.advance(1.0)
            taxi.driver("lazy", NEAR)
        assert order.state == om.CREATED
        taxi.advance(1.0)
        assert order.state == om.CANCELLED
        assert order.reason == "no driver accepted within 40 s"
        assert taxi.events(order.id)[-1] == ("created", "cancelled", None, "no driver accepted within 40 s")
    finally:
        taxi.close()


def test_offer_ttr_never_runs_past_the_accept_deadline():
    taxi = Taxi(accept_timeout=10.0, offer_ttr=15.0)
    try:
        taxi.driver("slow", NEAR)
        order = taxi.order()
        assert taxi.offer_for("slow")["expires_in"] == pytest.approx(10.0)
        taxi.advance(10.0)
        assert order.state == om.CANCELLED
    finally:
        taxi.close()


def test_a_driver_gets_one_offer_at_a_time(taxi):
    taxi.driver("only", NEAR)
    first = taxi.order()
    second = taxi.order()
    assert first.driver == "only"
    assert second.state == om.CREATED  # the only driver has an offer out
    taxi.service.decline("only", first.id)
    taxi.advance(1.0)
    assert second.state == om.OFFERED and second.driver == "only"
    assert taxi.offer_for("only")["order_id"] == second.id


def test_long_poll_wakes_when_an_offer_arrives(taxi):
    taxi.driver("d", NEAR)
    got = []
    poller = taxi.runtime.spawn(lambda: got.append(taxi.service.poll_offer("d", 30.0)), name="poll")
    taxi.advance(2.0)
    assert got == []
    order = taxi.order()
    poller.join(1)
    assert got[0]["order_id"] == order.id


def test_long_poll_times_out_empty(taxi):
    got = []
    poller = taxi.runtime.spawn(lambda: got.append(taxi.service.poll_offer("d", 5.0)), name="poll")
    taxi.advance(4.9)
    assert got == []
    taxi.advance(0.2)
    poller.join(1)
    assert got == [None]
    assert taxi.service.dispatcher._conds == {}  # nothing left behind per driver


def test_cancel_withdraws_the_offer(taxi):
    taxi.driver("d", NEAR)
    order = taxi.order()
    for bad in ("", "   ", "x" * 201):
        with pytest.raises(BadRequest):
            taxi.service.cancel(order.id, bad)
    assert order.state == om.OFFERED and taxi.offer_for("d")["order_id"] == order.id  # untouched
    taxi.service.cancel(order.id, "changed my mind")
    taxi.settle()
    assert order.state == om.CANCELLED and order.reason == "changed my mind"
    assert taxi.offer_for("d") is None
    with pytest.raises(NoOffer):
        taxi.service.accept("d", order.id)
    assert taxi.service.dispatcher.offers_tube.statistics()["tasks"]["total"] == 0
    with pytest.raises(InvalidTransition):
        taxi.service.cancel(order.id, "again")
    # The driver is free for the next order.
    nxt = taxi.order()
    assert nxt.driver == "d"


def test_offline_and_busy_drivers_get_no_offers(taxi):
    taxi.driver("gone", NEAR)
    taxi.advance(31.0)  # not heard from for more than 30 s
    taxi.driver("busy", NEAR, status="busy")
    taxi.driver("far", FAR)
    order = taxi.order()
    assert order.driver == "far"


def test_only_the_assigned_driver_moves_the_ride_on(taxi):
    taxi.driver("d", NEAR)
    taxi.driver("other", FAR)
    order = taxi.order()
    taxi.service.accept("d", order.id)
    with pytest.raises(WrongDriver):
        taxi.service.arriving(order.id, "other")
    with pytest.raises(InvalidTransition):
        taxi.service.complete(order.id, "d")  # not arriving yet
    taxi.service.arriving(order.id, "d")
    taxi.service.complete(order.id, "d")
    assert order.state == om.COMPLETED
    assert taxi.service.geo.get("d", taxi.clock.monotonic()).status == "free"
    assert [e[1] for e in taxi.events(order.id)] == ["created", "offered", "accepted", "arriving", "completed"]


def test_finished_orders_are_forgotten_after_keep_finished_but_still_counted():
    taxi = Taxi(keep_finished=100.0)
    try:
        order = taxi.order()
        taxi.service.cancel(order.id, "test")
        taxi.advance(99.0)
        taxi.service.sweep()
        assert len(taxi.service.book) == 1
        taxi.advance(2.0)
        taxi.service.sweep()
        assert len(taxi.service.book) == 0
        assert taxi.service.stats()["orders"]["cancelled"] == 1
    finally:
        taxi.close()


def test_draining_store_refuses_new_work_and_changes_nothing(taxi):
    taxi.driver("d", NEAR)
    order = taxi.order()
    taxi.store.drain(True)
    from deploy.taxi.dispatch import Unavailable
    with pytest.raises(Unavailable):
        taxi.service.accept("d", order.id)
    with pytest.raises(Unavailable):
        taxi.order()
    assert order.state == om.OFFERED
    assert len(taxi.service.book) == 1
