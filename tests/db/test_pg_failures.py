"""PostgreSQL failure paths: statement timeout, killed sessions, exhausted pool, and a
database that goes away and comes back (through a proxy the test cuts)."""
import socket

import gevent
import gevent.event
import psycopg.conninfo
import pytest

from fiberapp.db.errors import DbClosed, DbUnavailable, PoolExhausted, QueryTimeout
from fiberapp.db.pg import PgPool
from tests.db.conftest import active_queries, wait_for
from tests.db.proxy import Proxy


def test_statement_timeout_is_server_side_and_the_pool_stays_healthy(pg_dsn, runtime, admin, app_name):
    pool = PgPool(pg_dsn, runtime=runtime, max_size=2, statement_timeout=0.1, application_name=app_name)
    pool.open(wait=True)
    try:
        with pytest.raises(QueryTimeout) as info:
            pool.fetch_val("SELECT pg_sleep(5)")
        assert info.value.__cause__.sqlstate == "57014"  # query_canceled, by the server
        # nothing is left running on the server, and the same pool goes on working
        assert active_queries(admin, app_name, "SELECT pg_sleep%") == 0
        assert pool.fetch_val("SELECT 41 + 1") == 42
        assert pool.health()["status"] == "ok"
        assert pool.fetch_val("SHOW statement_timeout") == "100ms"
    finally:
        pool.close()


def test_terminated_connection_in_use_is_recovered(pg, admin, app_name, runtime):
    victim = runtime.spawn(pg.fetch_val, "SELECT pg_sleep(10)", name="victim")
    wait_for(lambda: active_queries(admin, app_name, "SELECT pg_sleep%") == 1, what="the victim query")
    admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s AND query LIKE 'SELECT pg_sleep%%'",
        (app_name,),
    )
    gevent.joinall([victim])
    assert isinstance(victim.exception, DbUnavailable)
    assert pg.health()["status"] == "degraded"  # until a call succeeds again
    # The broken connection was discarded; the next calls get working ones.
    assert [pg.fetch_val("SELECT 1") for _ in range(5)] == [1] * 5
    assert pg.health()["status"] == "ok"


def test_exhausted_pool_raises_after_max_wait(pg_dsn, runtime, app_name):
    pool = PgPool(pg_dsn, runtime=runtime, min_size=1, max_size=1, max_wait=0.2, application_name=app_name)
    pool.open(wait=True)
    held, release = gevent.event.Event(), gevent.event.Event()

    def hold():
        with pool.connection():
            held.set()
            release.wait(5)

    holder = runtime.spawn(hold, name="holder")
    try:
        assert held.wait(5)
        with pytest.raises(PoolExhausted) as info:
            pool.fetch_val("SELECT 1")
        assert "max_wait=0.2" in str(info.value)
        assert pool.health()["status"] == "ok"  # a busy pool is not a broken database
        release.set()
        holder.join()
        assert pool.fetch_val("SELECT 1") == 1
    finally:
        release.set()
        pool.close()
    with pytest.raises(DbClosed):
        pool.fetch_val("SELECT 1")


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_nothing_listening_is_unavailable_and_degraded(pg_dsn, runtime, ticker):
    params = psycopg.conninfo.conninfo_to_dict(pg_dsn)
    params.update(host="127.0.0.1", port=str(_free_port()))
    pool = PgPool(psycopg.conninfo.make_conninfo(**params), runtime=runtime, max_wait=0.3)
    with pytest.raises(DbUnavailable):
        pool.open(wait=True, timeout=0.3)
    pool.open()  # wait=False: the app starts, health says what is wrong
    try:
        ticks = ticker.count
        with pytest.raises(DbUnavailable) as info:
            pool.fetch_val("SELECT 1")
        assert "refused" in str(info.value).lower()
        assert ticker.count > ticks  # the loop kept turning while the call waited
        health = pool.health()
        assert health["status"] == "degraded" and health["connection_errors"] >= 1
        print(f"\nlargest loop stall while the database was unreachable: {ticker.max_gap * 1000:.1f} ms")
    finally:
        pool.close()


def test_database_goes_away_and_comes_back(pg_dsn, runtime, ticker):
    params = psycopg.conninfo.conninfo_to_dict(pg_dsn)
    proxy = Proxy(runtime, (params.get("host") or "127.0.0.1", int(params.get("port") or 5432)))
    params.update(host="127.0.0.1", port=str(proxy.port))
    pool = PgPool(psycopg.conninfo.make_conninfo(**params), runtime=runtime, min_size=1, max_size=3, max_wait=0.5)
    pool.open(wait=True)
    try:
        assert pool.fetch_val("SELECT 1") == 1 and pool.health()["status"] == "ok"
        proxy.cut()
        ticks = ticker.count
        with pytest.raises(DbUnavailable):
            pool.fetch_val("SELECT 1")  # the pooled connection died under it
        with pytest.raises(DbUnavailable):
            pool.fetch_val("SELECT 1")  # no connection can be made: the pool keeps trying
        assert pool.health()["status"] == "degraded"
        assert ticker.count > ticks  # other fibers ran throughout the outage

        proxy.restore()

        def recovered():
            try:
                return pool.fetch_val("SELECT 1") == 1
            except DbUnavailable:
                return False

        wait_for(recovered, timeout=20, what="the pool to reconnect")
        assert pool.health()["status"] == "ok"
        assert pool.health()["connection_errors"] >= 1
        print(f"\nlargest loop stall across the outage: {ticker.max_gap * 1000:.1f} ms")
    finally:
        pool.close()
        proxy.stop()


def test_health_interval_notices_an_outage_without_traffic(pg_dsn, runtime):
    params = psycopg.conninfo.conninfo_to_dict(pg_dsn)
    proxy = Proxy(runtime, (params.get("host") or "127.0.0.1", int(params.get("port") or 5432)))
    params.update(host="127.0.0.1", port=str(proxy.port))
    pool = PgPool(psycopg.conninfo.make_conninfo(**params), runtime=runtime, max_size=2, max_wait=0.3,
                  health_interval=0.05)
    pool.open(wait=True)
    try:
        assert any(f.name == "pg-health:default" for f in runtime.fibers())
        proxy.cut()
        wait_for(lambda: pool.health()["status"] == "degraded", what="the health fiber to notice")
        proxy.restore()
        wait_for(lambda: pool.health()["status"] == "ok", timeout=20, what="the health fiber to see recovery")
    finally:
        pool.close()
        proxy.stop()
    assert not any(f.name == "pg-health:default" for f in runtime.fibers())


def test_open_refuses_a_psycopg_imported_before_patching(pg_dsn):
    """psycopg imported first picks the blocking wait_c: open() must refuse, not serve
    with every query stalling the loop. Needs a fresh process (this one is patched)."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import psycopg                                  # too early
        from fiberapp.runtime.patch import patch_all
        patch_all()
        from fiberapp.db.errors import DbConfigError
        from fiberapp.db.pg import PgPool
        try:
            PgPool({pg_dsn!r}, runtime=None).open()
        except DbConfigError as exc:
            print("refused:", exc)
        else:
            print("opened")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "refused: pg: psycopg was imported before gevent patching" in out.stdout, out.stdout + out.stderr
