"""The history writer against the real PostgreSQL: batches, an outage (a pool pointed at
a closed port) during which events wait in the tube, then the database "comes back" (a
forwarder starts listening on that port) and every event is written once."""
import socket
import uuid

import gevent
import psycopg
import psycopg.conninfo
import pytest

from deploy.taxi import sql
from deploy.taxi.history import HistoryWriter
from deploy.taxi.orders import OrderBook
from deploy.taxi.settings import Settings
from fiberapp.db.pg import PgPool
from fiberapp.runtime.clock import SystemClock
from fiberapp.runtime.fiber import Runtime
from queues.store import Store
from tests.db.proxy import Proxy
from tests.services import pg_dsn


@pytest.fixture
def schema():
    dsn = pg_dsn()
    name = "taxi_hist_" + uuid.uuid4().hex[:10]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
        conn.execute(f"SET search_path TO {name}")
        sql.apply_schema(conn)
    try:
        yield dsn, name
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {name} CASCADE")


def dsn_for(dsn, schema, port=None):
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    params["options"] = f"-c search_path={schema}"
    if port is not None:
        params["host"], params["port"] = "127.0.0.1", str(port)
    return psycopg.conninfo.make_conninfo(**params)


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return port


def make_events(writer, book, clock, n_orders):
    """Real order events (create -> offer -> accept for odd ids) recorded in the writer."""
    recorded = []
    for i in range(n_orders):
        order, event = book.create(f"c{i}", (55.7, 37.6), (55.8, 37.7), wall=clock.time(), mono=clock.monotonic())
        writer.record(order, event)
        recorded.append(event)
        if i % 2:
            for action in ("offer", "accept"):
                order, event = book.act(order.id, action, driver=f"d{i}", wall=clock.time(), mono=clock.monotonic())
                writer.record(order, event)
                recorded.append(event)
    return recorded


def stored(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        events = conn.execute("SELECT id, order_id, from_state, to_state, driver FROM taxi_order_events ORDER BY id").fetchall()
        orders = dict(conn.execute("SELECT id, state FROM taxi_orders").fetchall())
    return events, orders


def test_events_wait_out_an_outage_then_are_written_once(schema):
    dsn, name = schema
    clock = SystemClock()
    runtime = Runtime(clock=clock, cpu_accounting=False)
    store = Store(clock=clock).start(runtime)
    port = closed_port()
    pool = PgPool(dsn_for(dsn, name, port), runtime=runtime, max_wait=0.5, connect_timeout=1.0)
    pool.open()
    settings = Settings(history_backoff=0.05, history_batch=7)
    writer = HistoryWriter(store, pool, clock, settings)
    writer.next_id = 1
    book = OrderBook()
    fiber = runtime.spawn(writer.run, name="history")
    forwarder = None
    try:
        recorded = make_events(writer, book, clock, 20)
        assert len(recorded) == 40
        while writer.failures < 3:
            assert writer.wait_outcome(10), "the writer never tried"
        good = dsn_for(dsn, name)
        assert stored(good) == ([], {})
        assert writer.pending() == 40 and writer.written == 0  # all still in the tube
        # PostgreSQL comes back on the same address.
        params = psycopg.conninfo.conninfo_to_dict(dsn)
        forwarder = Proxy(runtime, (params.get("host") or "127.0.0.1", int(params.get("port") or 5432)), port=port)
        assert writer.flush(30), writer.stats()
        events, orders = stored(good)
        assert [e[0] for e in events] == list(range(1, 41))  # none lost, none twice, in order
        assert [(e[1], e[2], e[3], e[4]) for e in events] == [
            (ev.order_id, ev.from_state, ev.to_state, ev.driver) for ev in recorded]
        assert orders == {o: ("accepted" if (o - 1) % 2 else "created") for o in range(1, 21)}
        assert writer.pending() == 0 and writer.written == 40
        assert writer.batches >= 40 // 7
    finally:
        fiber.cancel()
        gevent.joinall([fiber], timeout=2)
        pool.close()
        store.stop()
        if forwarder is not None:
            forwarder.stop()


def test_a_batch_written_twice_is_stored_once_and_ids_are_seeded_past_both(schema):
    """A commit whose answer was lost, or a crash between commit and ack, rewrites a batch:
    the explicit event ids make that a no-op. A new writer's ids start above the table's
    and the tube's."""
    dsn, name = schema
    clock = SystemClock()
    runtime = Runtime(clock=clock, cpu_accounting=False)
    store = Store(clock=clock).start(runtime)
    pool = PgPool(dsn_for(dsn, name), runtime=runtime, max_wait=5.0)
    pool.open(wait=True)
    try:
        writer = HistoryWriter(store, pool, clock, Settings())
        assert writer.seed() == 0 and writer.next_id == 1
        book = OrderBook()
        make_events(writer, book, clock, 4)  # 8 events
        tasks = writer.tube.take_many(100, timeout=0, session="taxi.history")
        records = [t.data for t in tasks]
        writer.write(records)
        writer.write(records)  # again, as after a lost COMMIT answer
        assert writer.write_batch(tasks)  # and once more through the normal path
        events, orders = stored(dsn_for(dsn, name))
        assert [e[0] for e in events] == list(range(1, 9))
        assert len(orders) == 4
        # One more event waits in the tube (PostgreSQL has ids up to 8): a new writer over the
        # same store seeds above both.
        make_events(writer, book, clock, 1)
        fresh = HistoryWriter(store, pool, clock, Settings())
        assert fresh.seed() == 5  # order 5 exists only in the tube
        assert fresh.next_id == 10
    finally:
        pool.close()
        store.stop()
