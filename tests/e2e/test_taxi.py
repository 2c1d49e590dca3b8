"""End to end: the real `fiberapp run deploy/taxi/app.py` (port 0, its own data dir, a
fresh PostgreSQL schema), driven by the taxi load generator (200 drivers, ~50 orders over
a few seconds), then checked against PostgreSQL: every order reached a final state and
its history rows are exactly the transitions it went through."""
import json
import os
import uuid
from pathlib import Path

import psycopg
import psycopg.conninfo
import pytest

from deploy.taxi.orders import FINAL_STATES, TRANSITIONS
from fiberapp.loadgen.taxi import Simulation, TaxiConfig
from tests.e2e.server import Server
from tests.services import pg_dsn

APP = Path(__file__).resolve().parents[2] / "deploy" / "taxi" / "app.py"
DURATION = 4.0
ORDERS = 50
ALLOWED = {(src, dst) for table in TRANSITIONS.values() for src, dst in table.items()}


@pytest.fixture
def schema():
    dsn = pg_dsn()
    name = "taxi_e2e_" + uuid.uuid4().hex[:10]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    params["options"] = f"-c search_path={name}"
    scoped = psycopg.conninfo.make_conninfo(**params)
    try:
        yield scoped
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {name} CASCADE")


@pytest.fixture
def server(tmp_path, schema):
    config = tmp_path / "taxi.toml"
    config.write_text(f'wal_mode = "write"\n\n[pg]\ndsn = {json.dumps(schema)}\nmax_size = 4\nmax_wait = 2.0\n')
    env = {"TAXI_ACCEPT_TIMEOUT": "3", "TAXI_OFFER_TTR": "2", "TAXI_RETRY_DELAY": "0.2",
           "TAXI_HISTORY_BACKOFF": "0.1"}
    srv = Server(tmp_path, str(APP), config=config, env=env)
    srv.start()
    yield srv, schema
    srv.stop()


# per_conn 1: a connection per driver, offers by long-poll; 10: 10 drivers pipelining on
# each of 20 connections, offers read from the location answers.
@pytest.mark.parametrize("per_conn", [1, 10])
def test_taxi_app_under_the_load_generator(server, per_conn):
    srv, dsn = server
    cfg = TaxiConfig(url=srv.url, drivers=200, interval=0.5, orders=ORDERS / DURATION, duration=DURATION,
                     accept=0.8, ride_time=1.0, patience=2.5, client_poll=0.25, client_conns=8,
                     rush=0.0, timeout=5.0, seed=7, per_conn=per_conn)
    sim = Simulation(cfg)
    sim.load()
    results = sim.finish()
    report = results.report()

    created = sorted(int(oid) for oid, rec in results.orders.items() if rec["created"] is not None)
    assert len(created) >= ORDERS // 2, report
    # The server never failed a request: only 4xx races (an offer that lapsed as it was
    # accepted, an order cancelled as its driver moved it on) are allowed, and few.
    assert not [k for k in results.errors if not k.startswith("http 4")], results.errors
    assert results.total_errors() <= results.total_requests() * 0.05, results.errors
    assert results.requests.get("location", 0) >= 200  # every driver was heard from
    assert (results.requests.get("offer_poll", 0) > 0) == (per_conn == 1)
    states = {oid: results.orders[str(oid)]["state"] for oid in created}
    assert "completed" in states.values(), report

    # The generator stopped mid-ride for some: end the shift, cancelling what is open.
    for oid, state in states.items():
        if state not in FINAL_STATES:
            status, body = srv.request("POST", f"/taxi/orders/{oid}/cancel", {"reason": "end of test"})
            assert status == 200, body
            states[oid] = body["order"]["state"]
    for oid in created:
        status, body = srv.request("GET", f"/taxi/orders/{oid}")
        assert status == 200 and body["order"]["state"] == states[oid] and states[oid] in FINAL_STATES

    status, history = srv.request("POST", "/taxi/history/flush?timeout=20")
    assert status == 200, history
    assert history["pending"] == 0 and history["written"] == history["recorded"]
    status, stats = srv.request("GET", "/taxi/stats")
    assert sum(stats["orders"].values()) == len(created)
    assert stats["dispatch_latency"]["count"] >= 1

    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = dict(conn.execute("SELECT id, state FROM taxi_orders").fetchall())
        events = conn.execute(
            "SELECT order_id, from_state, to_state, driver, reason FROM taxi_order_events ORDER BY id").fetchall()
    assert rows == states
    assert len(events) == history["recorded"]
    chains = {}
    for order_id, src, dst, driver, reason in events:
        chains.setdefault(order_id, []).append((src, dst, driver, reason))
    assert sorted(chains) == created
    for oid, chain in chains.items():
        assert chain[0][:2] == (None, "created"), chain
        for prev, nxt in zip(chain, chain[1:]):
            assert nxt[0] == prev[1], chain              # each starts where the last ended
            assert (nxt[0], nxt[1]) in ALLOWED, chain    # and is a transition the machine has
        assert chain[-1][1] == states[oid]
        if states[oid] == "completed":
            drivers = {d for src, dst, d, _ in chain if dst in ("accepted", "arriving", "completed")}
            assert len(drivers) == 1, chain
        else:
            assert chain[-1][3], chain                   # a cancellation carries its reason
    srv_log = srv.log()
    assert "Traceback" not in srv_log, srv_log
    assert os.path.isdir(srv.data_dir)
