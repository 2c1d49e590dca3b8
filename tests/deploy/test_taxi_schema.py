"""The schema against the real PostgreSQL on 127.0.0.1 (FIBERAPP_TEST_PG_DSN overrides)."""
import os
import uuid

import pytest

from deploy.taxi import sql
from deploy.taxi.orders import OrderBook

DSN = os.environ.get("FIBERAPP_TEST_PG_DSN", "host=127.0.0.1 port=5432 dbname=test user=postgres connect_timeout=3")


@pytest.fixture
def conn():
    psycopg = pytest.importorskip("psycopg")
    try:
        c = psycopg.connect(DSN, autocommit=False)
    except psycopg.OperationalError as e:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"PostgreSQL unreachable: {e}")
    schema = "taxi_test_" + uuid.uuid4().hex[:10]
    c.execute(f"CREATE SCHEMA {schema}")
    c.execute(f"SET search_path TO {schema}")
    c.commit()  # so the teardown can drop it whatever the test left behind
    try:
        yield c
    finally:
        c.rollback()
        c.execute(f"DROP SCHEMA {schema} CASCADE")
        c.commit()
        c.close()


def test_schema_is_idempotent_and_round_trips_a_ride(conn):
    sql.apply_schema(conn)
    sql.apply_schema(conn)  # second start: no error, nothing duplicated
    indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")}
    assert {"taxi_orders_open_idx", "taxi_orders_driver_idx", "taxi_orders_client_idx",
            "taxi_order_events_order_idx", "taxi_order_events_at_idx"} <= indexes

    book = OrderBook()
    o1, e1 = book.create("alice", (55.75, 37.62), (55.7, 37.5), wall=1_700_000_000.0, mono=1.0)
    o2, e2 = book.create("bob", (55.76, 37.60), (55.8, 37.7), wall=1_700_000_001.0, mono=2.0)
    events = [e1, e2]
    for action, driver, t in [("offer", "d1", 2), ("accept", "d1", 3), ("arrive", "d1", 4)]:
        events.append(book.act(o1.id, action, driver=driver, wall=1_700_000_000.0 + t, mono=t)[1])
    events.append(book.act(o2.id, "cancel", reason="changed plans", wall=1_700_000_010.0, mono=10)[1])
    # The history writer's batch: orders first (foreign key), then events.
    with conn.cursor() as cur:
        cur.executemany(sql.UPSERT_ORDER, [o1.to_row(), o2.to_row()])
        cur.executemany(sql.INSERT_EVENT, events)
    conn.commit()

    open_rows = conn.execute(sql.OPEN_ORDERS).fetchall()
    assert [(r[0], r[6], r[7]) for r in open_rows] == [(o1.id, "arriving", "d1")]
    assert conn.execute(sql.DRIVER_CURRENT, ("d1",)).fetchall() == [(o1.id, "arriving")]
    history = conn.execute(sql.ORDER_HISTORY, (o1.id,)).fetchall()
    assert [(h[0], h[1]) for h in history] == [(None, "created"), ("created", "offered"),
                                             ("offered", "accepted"), ("accepted", "arriving")]
    assert float(history[-1][2]) == pytest.approx(1_700_000_004.0)
    assert conn.execute(sql.MAX_ORDER_ID).fetchone()[0] == o2.id

    # A stale upsert (older updated_at) must not roll an order back.
    stale = list(o1.to_row())
    stale[6], stale[10] = "accepted", 1_700_000_003.0
    conn.execute(sql.UPSERT_ORDER, stale)
    assert conn.execute("SELECT state FROM taxi_orders WHERE id = %s", (o1.id,)).fetchone()[0] == "arriving"


def test_dispatcher_queries_use_their_indexes(conn):
    sql.apply_schema(conn)
    conn.execute("SET enable_seqscan = off")  # tiny tables: make the planner show its options
    plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql.OPEN_ORDERS))
    assert "taxi_orders_open_idx" in plan
    plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql.DRIVER_CURRENT.replace("%s", "'d1'")))
    assert "taxi_orders_driver_idx" in plan
    plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql.ORDER_HISTORY.replace("%s", "1")))
    assert "taxi_order_events_order_idx" in plan


def test_bad_rows_are_refused_by_the_database(conn):
    psycopg = pytest.importorskip("psycopg")
    sql.apply_schema(conn)
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(sql.UPSERT_ORDER, (1, "c", 95.0, 0, 0, 0, "created", None, None, 0, 0))
