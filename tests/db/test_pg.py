"""PostgreSQL pool against the real server: helpers, concurrency, transactions, COPY,
pipeline, LISTEN."""
import gevent
import gevent.event
import pytest

from fiberapp.db.errors import QueryError, TransactionConflict
from tests.db.conftest import active_queries, wait_for


@pytest.fixture
def table(pg, app_name):
    name = app_name.replace("-", "_")
    pg.execute(f"CREATE TABLE {name} (k int PRIMARY KEY, v text)")
    yield name
    pg.execute(f"DROP TABLE IF EXISTS {name}")


def test_helpers(pg, table):
    assert pg.execute(f"INSERT INTO {table} VALUES (%s, %s), (%s, %s)", (1, "a", 2, "b")) == 2
    assert pg.execute_many(f"INSERT INTO {table} VALUES (%s, %s)", [(3, "c"), (4, None)]) == 2
    assert pg.fetch_one(f"SELECT * FROM {table} WHERE k = %s", (2,)) == {"k": 2, "v": "b"}
    assert pg.fetch_one(f"SELECT * FROM {table} WHERE k = 99") is None
    assert [r["k"] for r in pg.fetch_all(f"SELECT k FROM {table} ORDER BY k")] == [1, 2, 3, 4]
    assert pg.fetch_val(f"SELECT count(*) FROM {table} WHERE v IS NULL") == 1
    assert pg.fetch_val(f"SELECT v FROM {table} WHERE k = 99") is None


def test_sql_errors_are_typed_and_harmless(pg, table):
    pg.execute(f"INSERT INTO {table} VALUES (1, 'a')")
    with pytest.raises(QueryError) as info:
        pg.execute(f"INSERT INTO {table} VALUES (1, 'again')")
    assert info.value.sqlstate == "23505"  # unique_violation
    with pytest.raises(QueryError) as info:
        pg.fetch_val("SELEC 1")
    assert info.value.sqlstate == "42601"
    assert pg.fetch_val("SELECT 1") == 1 and pg.health()["status"] == "ok"


def test_fifty_sleeps_share_a_pool_of_ten_without_stalling_the_loop(pg, admin, app_name, ticker, runtime):
    """50 x pg_sleep(0.2) through 10 connections: the server sees exactly pool-size
    queries in flight at once, and the ticker fiber keeps running meanwhile."""
    pg.fetch_val("SELECT 1")  # warm one connection; the pool grows on demand
    clock = runtime.clock
    peak = 0
    done = gevent.event.Event()

    def watch():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, active_queries(admin, app_name, "SELECT pg_sleep%"))
            gevent.sleep(0.02)

    watcher = runtime.spawn(watch, name="test-watch")
    ticks_before = ticker.count
    start = clock.monotonic()
    fibers = [runtime.spawn(pg.fetch_val, "SELECT pg_sleep(0.2)", name=f"q{i}") for i in range(50)]
    gevent.joinall(fibers, raise_error=True)
    wall = clock.monotonic() - start
    done.set()
    watcher.join()
    print(f"\n50 x pg_sleep(0.2) over 10 connections: {wall:.2f}s wall, largest loop stall {ticker.max_gap * 1000:.1f} ms")
    assert peak == 10  # bounded by max_size, and really concurrent
    assert ticker.count - ticks_before > 20  # the loop kept turning during the queries


def test_transaction_commits_and_rolls_back(pg, table):
    with pg.transaction() as tx:
        tx.execute(f"INSERT INTO {table} VALUES (1, 'kept')")
    with pytest.raises(RuntimeError):
        with pg.transaction() as tx:
            tx.execute(f"INSERT INTO {table} VALUES (2, 'lost')")
            assert tx.fetch_val(f"SELECT count(*) FROM {table}") == 2  # visible inside
            raise RuntimeError("abort")
    assert pg.fetch_all(f"SELECT k FROM {table}") == [{"k": 1}]
    with pg.transaction(isolation="serializable", read_only=True) as tx:
        assert tx.fetch_val("SHOW transaction_isolation") == "serializable"
        with pytest.raises(QueryError) as info:
            tx.execute(f"INSERT INTO {table} VALUES (3, 'x')")
        assert info.value.sqlstate == "25006"  # read_only_sql_transaction
    assert pg.fetch_val(f"SELECT count(*) FROM {table}") == 1  # the pool's connection is clean


def _write_skew(pg, table, barrier_for, attempts, log):
    """Two serializable transactions that each read what the other writes: PostgreSQL
    must abort one of them (SQLSTATE 40001) when both get past their reads."""

    def worker(me, other, barrier):
        first = True
        for attempt in pg.transaction(isolation="serializable", attempts=attempts):
            with attempt as tx:
                log.append(me)
                tx.fetch_val(f"SELECT count(*) FROM {table} WHERE k = %s", (other,))
                if first:  # on the first try, make both read before either writes
                    first = False
                    barrier.set()
                    barrier_for[other].wait(5)
                tx.execute(f"INSERT INTO {table} VALUES (%s, 'w')", (me,))

    return worker


def test_transaction_loop_retries_serialization_failures(pg, table, runtime):
    log = []
    events = {1: gevent.event.Event(), 2: gevent.event.Event()}
    worker = _write_skew(pg, table, events, 3, log)
    fibers = [runtime.spawn(worker, 1, 2, events[1], name="tx1"), runtime.spawn(worker, 2, 1, events[2], name="tx2")]
    gevent.joinall(fibers, raise_error=True)
    assert sorted(log) in ([1, 1, 2], [1, 2, 2])  # exactly one of the two ran twice
    assert pg.conflicts == 1
    assert pg.fetch_val(f"SELECT count(*) FROM {table}") == 2


def test_single_attempt_transaction_raises_conflict(pg, table, runtime):
    events = {1: gevent.event.Event(), 2: gevent.event.Event()}
    worker = _write_skew(pg, table, events, 1, [])
    fibers = [runtime.spawn(worker, 1, 2, events[1], name="tx1"), runtime.spawn(worker, 2, 1, events[2], name="tx2")]
    gevent.joinall(fibers)
    errors = [f.exception for f in fibers if f.exception is not None]
    assert len(errors) == 1 and isinstance(errors[0], TransactionConflict)
    assert errors[0].sqlstate == "40001"
    assert pg.fetch_val(f"SELECT count(*) FROM {table}") == 1


def test_deadlock_is_retried(pg, table, runtime):
    pg.execute(f"INSERT INTO {table} VALUES (1, 'a'), (2, 'b')")
    locked = {1: gevent.event.Event(), 2: gevent.event.Event()}
    tries = []

    def worker(first, second):
        for attempt in pg.transaction(attempts=3):
            with attempt as tx:
                tries.append(first)
                tx.execute("SET LOCAL deadlock_timeout = '50ms'")
                tx.execute(f"UPDATE {table} SET v = v || %s WHERE k = %s", (str(first), first))
                if len(tries) <= 2:  # first round: both hold one row, then want the other
                    locked[first].set()
                    locked[second].wait(5)
                tx.execute(f"UPDATE {table} SET v = v || %s WHERE k = %s", (str(first), second))

    fibers = [runtime.spawn(worker, 1, 2, name="d1"), runtime.spawn(worker, 2, 1, name="d2")]
    gevent.joinall(fibers, raise_error=True)
    assert len(tries) == 3 and pg.conflicts == 1
    # both workers' updates landed once each on both rows (the victim's first try left nothing)
    assert sorted(sorted(r["v"]) for r in pg.fetch_all(f"SELECT v FROM {table}")) == [["1", "2", "a"], ["1", "2", "b"]]


def test_run_transaction_returns_the_result(pg, table):
    assert pg.run_transaction(lambda tx, k: tx.execute(f"INSERT INTO {table} VALUES (%s, 'r')", (k,)), 7) == 1
    assert pg.fetch_val(f"SELECT v FROM {table} WHERE k = 7") == "r"


def test_copy_in_and_out(pg, table, ticker):
    rows = [(i, f"row {i}" if i % 3 else None) for i in range(5000)]
    assert pg.copy_in(table, rows, columns=["k", "v"]) == 5000
    assert pg.fetch_val(f"SELECT count(*) FROM {table} WHERE v IS NULL") == 1667
    out = pg.copy_out(f"SELECT k, v FROM {table} WHERE k < %s ORDER BY k", (3,))
    assert out == [("0", None), ("1", "row 1"), ("2", "row 2")]
    chunks = []
    size = pg.copy_out(f"SELECT k, v FROM {table} ORDER BY k", write=chunks.append)
    data = b"".join(chunks)
    assert size == len(data) and data.count(b"\n") == 5000
    assert data.startswith(b"0\t\\N\n1\trow 1\n")


def test_pipeline_is_one_atomic_batch(pg, table):
    results = pg.pipeline(
        [(f"INSERT INTO {table} VALUES (%s, %s)", (1, "a")), (f"INSERT INTO {table} VALUES (%s, %s)", (2, "b")),
         f"SELECT k, v FROM {table} ORDER BY k"]
    )
    assert results == [1, 1, [{"k": 1, "v": "a"}, {"k": 2, "v": "b"}]]
    with pytest.raises(QueryError):
        pg.pipeline([(f"INSERT INTO {table} VALUES (3, 'c')", None), (f"INSERT INTO {table} VALUES (1, 'dup')", None)])
    assert pg.fetch_val(f"SELECT count(*) FROM {table}") == 2  # the batch left nothing behind


def test_listen_delivers_while_other_fibers_run(pg, admin, app_name, ticker, runtime):
    got = []
    arrived = gevent.event.Event()

    def on_notify(n):
        got.append((n.channel, n.payload))
        if len(got) == 3:
            arrived.set()

    listener = pg.listen("fa_events", callback=on_notify)
    try:
        assert listener.wait_ready(5)
        assert any(f.name.startswith("pg-listen:") for f in runtime.fibers())
        busy = runtime.spawn(pg.fetch_val, "SELECT pg_sleep(0.3)", name="busy")
        wait_for(lambda: active_queries(admin, app_name, "SELECT pg_sleep%") == 1, what="the busy query")
        for i in range(3):
            pg.notify("fa_events", f"m{i}")
        ticks = ticker.count
        assert arrived.wait(5)
        assert not busy.dead  # the notifications came in while the query was still running
        busy.join()
        assert got == [("fa_events", "m0"), ("fa_events", "m1"), ("fa_events", "m2")]
        assert ticker.count > ticks

        # The listener's session is killed: it reconnects (with backoff) and listens again.
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = %s AND query LIKE 'LISTEN%%'", (app_name,)
        ).fetchone()[0]
        assert killed == 1
        wait_for(lambda: listener.restarts == 1 and listener.ready, what="the listener to come back")
        assert pg.health()["listeners"] == 1 and pg.health()["listeners_down"] == 0
        arrived.clear()
        got.clear()
        for i in range(3):
            pg.notify("fa_events", f"again{i}")
        assert arrived.wait(5)
        assert [p for _, p in got] == ["again0", "again1", "again2"]
        assert listener.health()["status"] == "ok"
    finally:
        listener.stop()
    assert not listener.ready
    assert pg.health()["listeners"] == 0  # a stopped listener no longer counts


def test_listen_into_a_channel(pg):
    listener = pg.listen("fa_chan_a", "fa_chan_b")
    try:
        assert listener.wait_ready(5)
        pg.notify("fa_chan_b", "x")
        pg.notify("fa_chan_a", "y")
        first, second = listener.channel.get(timeout=5), listener.channel.get(timeout=5)
        assert [(first.channel, first.payload), (second.channel, second.payload)] == [("fa_chan_b", "x"), ("fa_chan_a", "y")]
    finally:
        listener.stop()
    assert listener.channel.is_closed()


def test_raw_connection_commits_an_open_transaction_and_rolls_back_on_error(pg, table):
    # connection() ends a transaction left open in the block the way psycopg's
    # `with conn:` does: commit after a clean exit, rollback after an exception.
    with pg.connection() as conn:
        conn.execute("BEGIN")
        conn.execute(f"INSERT INTO {table} VALUES (1, 'kept')")
    with pytest.raises(RuntimeError):
        with pg.connection() as conn:
            conn.execute("BEGIN")
            conn.execute(f"INSERT INTO {table} VALUES (2, 'dropped')")
            raise RuntimeError("boom")
    with pytest.raises(QueryError):
        with pg.connection() as conn:
            conn.execute("BEGIN")
            conn.execute(f"INSERT INTO {table} VALUES (3, 'dropped')")
            conn.execute("SELEC 1")
    assert pg.fetch_all(f"SELECT k, v FROM {table} ORDER BY k") == [{"k": 1, "v": "kept"}]
    with pg.connection() as conn:
        assert conn.pgconn.transaction_status == 0  # IDLE: nothing left open in the pool
