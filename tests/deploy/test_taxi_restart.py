"""A restart with an order out on offer: the real store with its WAL (wal_mode write) in a
temporary directory, PostgreSQL for the start-up queries, the FakeClock. The history
fiber is not run: events stay in their durable tube, where the test reads them.

What must hold: the order's event chain stays connected (every event starts from the
state the previous one ended in), so the offer that did not survive the restart shows
as an ``expire`` of that driver's offer, and the order goes to dispatch again, to
someone else, exactly once."""
import gevent
import pytest

from deploy.taxi import orders as om
from deploy.taxi.history import SESSION
from deploy.taxi.service import TaxiService
from deploy.taxi.settings import Settings
from fiberapp.db.pg import PgPool
from fiberapp.runtime.clock import FakeClock
from fiberapp.runtime.fiber import Runtime
from queues.persist import open_store
from tests.deploy.test_taxi_app_dispatch import FAR, HERE, NEAR
from tests.deploy.test_taxi_app_history import dsn_for, schema  # noqa: F401 (fixture)


class Life:
    """One run of the taxi service over the data directory; ``stop`` ends it as a crash
    would, as far as the taxi app can tell: nothing of it is told to stop first."""

    def __init__(self, data_dir, clock, dsn):
        self.clock = clock
        self.runtime = Runtime(clock=clock, cpu_accounting=False)
        self.store, self.persistence = open_store(data_dir, clock, runtime=self.runtime, wal_mode="write")
        self.pool = PgPool(dsn, runtime=self.runtime, max_wait=5.0)
        self.pool.open(wait=True)
        self.service = TaxiService(self.store, self.pool, clock, Settings())
        self.restored = self.service.start_up()
        d = self.service.dispatcher
        self.fibers = [self.runtime.spawn(fn, name=fn.__name__)
                       for fn in (d.run_dispatcher, d.run_desk, d.run_expiry)]
        self.settle()

    def settle(self):
        for _ in range(3):
            self.clock.advance(0)
            gevent.idle()

    def events(self, order_id):
        out = []
        for task in self.service.history.tube.tasks(limit=None):
            _, _, event = task.data
            if event[0] == order_id:
                out.append((event[1], event[2], event[4]))
        return out

    def stop(self):
        for f in self.fibers:
            f.cancel()
        gevent.joinall(self.fibers, timeout=2)
        self.pool.close()
        self.persistence.close()


def driver(life, driver_id, point):
    life.service.location(driver_id, {"lat": point[0], "lon": point[1], "status": "free"})


def test_an_offer_cut_short_by_a_restart_is_an_expiry_in_the_history(schema, tmp_path):  # noqa: F811
    dsn, name = schema
    clock = FakeClock()
    life = Life(str(tmp_path), clock, dsn_for(dsn, name))
    driver(life, "7", NEAR)
    order = life.service.create_order({"client": "c", "from": {"lat": HERE[0], "lon": HERE[1]},
                                       "to": {"lat": FAR[0], "lon": FAR[1]}})
    life.settle()
    assert order.state == om.OFFERED and order.driver == "7"
    assert life.service.poll_offer("7", 0)["order_id"] == order.id  # presented
    life.stop()

    life = Life(str(tmp_path), clock, dsn_for(dsn, name))
    try:
        assert life.restored == 1
        restored = life.service.book.get(order.id)
        chain = life.events(order.id)
        assert chain == [(None, om.CREATED, None), (om.CREATED, om.OFFERED, "7"),
                         (om.OFFERED, om.CREATED, "7")], chain
        for before, after in zip(chain, chain[1:]):
            assert after[0] == before[1]  # connected
        assert restored.state == om.CREATED and "7" in restored.declined
        assert life.service.poll_offer("7", 0) is None  # that offer is gone
        # Back in dispatch, once: the next free driver gets it (7 let it lapse).
        driver(life, "7", NEAR)
        driver(life, "8", FAR)
        clock.advance(Settings().retry_delay)
        life.settle()
        assert restored.state == om.OFFERED and restored.driver == "8"
        assert life.service.dispatcher.offers_made == 1
        assert life.service.dispatcher.dispatch_tube.statistics()["tasks"]["total"] == 0
        assert life.events(order.id)[3:] == [(om.CREATED, om.OFFERED, "8")]
    finally:
        life.stop()


def test_an_order_waiting_for_a_driver_is_queued_for_dispatch_once(schema, tmp_path):  # noqa: F811
    """Its dispatch task is in the store's WAL already: a restart must not add another
    (one more per restart, each a wasted dispatch pass)."""
    dsn, name = schema
    clock = FakeClock()
    life = Life(str(tmp_path), clock, dsn_for(dsn, name))
    order = life.service.create_order({"client": "c", "from": {"lat": HERE[0], "lon": HERE[1]},
                                       "to": {"lat": FAR[0], "lon": FAR[1]}})
    life.settle()  # no driver: released with a delay
    assert order.state == om.CREATED
    life.stop()

    for _ in range(2):
        life = Life(str(tmp_path), clock, dsn_for(dsn, name))
        try:
            assert life.service.book.get(order.id).state == om.CREATED
            assert life.service.dispatcher.dispatch_tube.statistics()["tasks"]["total"] == 1
        finally:
            life.stop()
    life = Life(str(tmp_path), clock, dsn_for(dsn, name))
    try:
        driver(life, "8", NEAR)
        clock.advance(Settings().retry_delay)
        life.settle()
        assert life.service.book.get(order.id).state == om.OFFERED
        assert life.service.dispatcher.offers_made == 1
    finally:
        life.stop()


@pytest.mark.parametrize("state", [om.ACCEPTED, om.ARRIVING])
def test_a_ride_in_progress_comes_back_as_it_was(schema, tmp_path, state):  # noqa: F811
    dsn, name = schema
    clock = FakeClock()
    life = Life(str(tmp_path), clock, dsn_for(dsn, name))
    driver(life, "7", NEAR)
    order = life.service.create_order({"client": "c", "from": {"lat": HERE[0], "lon": HERE[1]},
                                       "to": {"lat": FAR[0], "lon": FAR[1]}})
    life.settle()
    life.service.accept("7", order.id)
    if state == om.ARRIVING:
        life.service.arriving(order.id, "7")
    life.stop()

    life = Life(str(tmp_path), clock, dsn_for(dsn, name))
    try:
        restored = life.service.book.get(order.id)
        assert (restored.state, restored.driver) == (state, "7")
        assert life.service.dispatcher.dispatch_tube.statistics()["tasks"]["total"] == 0
        chain = life.events(order.id)
        assert chain[-1][1] == state and len(chain) == (3 if state == om.ACCEPTED else 4)
    finally:
        life.stop()


def test_an_offer_the_store_did_not_keep_lapses_at_start(schema, tmp_path):  # noqa: F811
    """PostgreSQL says offered but the store has no trace of the offer (its data directory
    was lost, or wal_mode none): the offer lapses at start, with its expire event."""
    dsn, name = schema
    clock = FakeClock()
    life = Life(str(tmp_path / "first"), clock, dsn_for(dsn, name))
    driver(life, "7", NEAR)
    order = life.service.create_order({"client": "c", "from": {"lat": HERE[0], "lon": HERE[1]},
                                       "to": {"lat": FAR[0], "lon": FAR[1]}})
    life.settle()
    history = life.service.history
    assert history.write_batch(history.tube.take_many(100, timeout=0, session=SESSION))
    life.stop()

    life = Life(str(tmp_path / "second"), clock, dsn_for(dsn, name))
    try:
        restored = life.service.book.get(order.id)
        assert (restored.state, restored.driver) == (om.CREATED, None) and "7" in restored.declined
        assert life.events(order.id) == [(om.OFFERED, om.CREATED, "7")]
        assert life.service.dispatcher.dispatch_tube.statistics()["tasks"]["total"] == 1
    finally:
        life.stop()


def test_an_offer_still_queued_for_its_driver_is_presented_after_the_restart(schema, tmp_path):  # noqa: F811
    dsn, name = schema
    clock = FakeClock()
    life = Life(str(tmp_path), clock, dsn_for(dsn, name))
    desk = life.fibers[1]  # run_desk: stopped, so the offer stays queued in the utube
    desk.cancel()
    gevent.joinall([desk], timeout=2)
    driver(life, "7", NEAR)
    order = life.service.create_order({"client": "c", "from": {"lat": HERE[0], "lon": HERE[1]},
                                       "to": {"lat": FAR[0], "lon": FAR[1]}})
    life.settle()
    assert order.state == om.OFFERED and life.service.poll_offer("7", 0) is None  # not presented yet
    life.stop()

    life = Life(str(tmp_path), clock, dsn_for(dsn, name))
    try:
        restored = life.service.book.get(order.id)
        assert (restored.state, restored.driver) == (om.OFFERED, "7")
        assert life.service.poll_offer("7", 0)["order_id"] == order.id
        life.service.accept("7", order.id)
        assert [e[1] for e in life.events(order.id)] == [om.CREATED, om.OFFERED, om.ACCEPTED]
    finally:
        life.stop()
