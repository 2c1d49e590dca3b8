"""Sharing or spreading the drivers' connections, and one worker's entry point.

Each simulated driver holds its own keep-alive connection, as a phone would, when that
fits. One process can hold only as many sockets as its open-files limit (RLIMIT_NOFILE;
the hard limit on the reference machine is 20,000, for the server too), so ``plan``
raises the soft limit to the hard one and, past it, makes drivers share connections
(see ``plan``). With ``--processes`` (or when even the shared connections do not fit)
the run is split into worker processes, each with its own range of driver ids and an
equal share of the order rate. Workers are this module run as
``python -m fiberapp.loadgen.worker``: the config arrives as one JSON line on stdin,
progress leaves as ``progress {json}`` lines every half second and the Results as one
``result {json}`` line. The final read-back of order states must not start before
every worker's drivers have stopped (else a driver elsewhere may still move an order
on), so a worker reports ``stopped`` after its load phase and waits for a ``sweep``
line from the parent, which sends it once all have stopped. The parent merges the
results (orders are joined by id: a client in one worker, the accepting driver in another; CLOCK_MONOTONIC is shared by every
process on the machine, so their timestamps compare).
"""
import json
import math
import sys
from dataclasses import replace

import gevent
import gevent.event
import orjson

from fiberapp.loadgen.config import LoadgenError, TaxiConfig
from fiberapp.loadgen.results import Results
from fiberapp.loadgen.taxi import Simulation

RESERVED_FDS = 64  # stdio, the hub, DNS, log files...
AUTO_PER_CONN = 20  # 20,000 drivers -> 1,000 connections (what a gateway's pool might hold)
PROGRESS_EVERY = 0.5


def raise_fd_limit():
    """Raise the soft open-files limit to the hard one; returns the soft limit now."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def plan(cfg, fd_limit=None):
    """(number of processes, drivers per connection, note saying how connections are spread).

    One keep-alive connection per driver (each driver long-polls its offers, as a phone
    would) when drivers and clients fit one process's open-files limit, which on one
    machine is also the server's. Past it the server, holding every connection in one
    process, would hit EMFILE, so drivers share connections instead: AUTO_PER_CONN
    drivers per connection, their requests pipelined (pipeline.py). A
    shared connection cannot hold a driver's long-poll (it would block the others), so
    those drivers learn of offers from their location answers. ``--per-conn`` chooses
    either explicitly; ``--processes`` spreads what is left over worker processes.
    """
    limit = raise_fd_limit() if fd_limit is None else fd_limit
    budget = max(1, limit - RESERVED_FDS)
    per_conn = cfg.per_conn or (1 if cfg.drivers + cfg.client_conns <= budget else AUTO_PER_CONN)
    driver_conns = math.ceil(cfg.drivers / per_conn)
    needed = driver_conns + cfg.client_conns
    n = cfg.processes or max(1, math.ceil(needed / budget))
    n = max(1, min(n, max(1, cfg.drivers)))
    if per_conn == 1:
        how = f"one keep-alive connection per driver ({cfg.drivers}), offers by long-poll"
    else:
        how = (f"{per_conn} drivers per keep-alive connection ({driver_conns} connections, requests "
               f"pipelined), offers read from the location answers (no long-poll)")
    where = "in one process" if n == 1 else f"spread over {n} processes (open-files limit {limit} per process)"
    return n, per_conn, f"{how}, + {cfg.client_conns} shared client connections, {where}"


def split(cfg, n):
    """The per-worker configs: contiguous driver id ranges, equal order-rate shares."""
    per, extra = divmod(cfg.drivers, n)
    out, first = [], cfg.first_driver
    for i in range(n):
        count = per + (1 if i < extra else 0)
        out.append(replace(cfg, drivers=count, first_driver=first, share=cfg.share / n, worker=i,
                           client_conns=max(1, cfg.client_conns // n), seed=cfg.seed, processes=1))
        first += count
    return out


def run(cfg, on_progress=None, clock=None, fd_limit=None):
    """Run the whole load (in this process or in workers); returns merged Results."""
    cfg.check()
    n, per_conn, note = plan(cfg, fd_limit)
    cfg = replace(cfg, per_conn=per_conn)
    if n == 1:
        sim = Simulation(cfg, clock=clock)
        ticker = None
        if on_progress is not None:
            ticker = gevent.spawn(_tick, sim, on_progress)
        try:
            results = sim.run()
        finally:
            if ticker is not None:
                ticker.kill()
        results.notes.append(note)
        return results
    return _run_workers(split(cfg, n), note, on_progress)


def _tick(sim, on_progress):
    while True:
        gevent.sleep(PROGRESS_EVERY)
        on_progress(sim.progress())


def _run_workers(configs, note, on_progress):
    from gevent import subprocess

    procs = []
    for wcfg in configs:
        p = subprocess.Popen([sys.executable, "-m", "fiberapp.loadgen.worker"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        p.stdin.write(orjson.dumps(wcfg.to_json()) + b"\n")
        p.stdin.flush()
        procs.append(p)
    latest = [{"elapsed": 0.0, "requests": 0, "errors": 0, "orders": 0} for _ in procs]
    outcome = [None] * len(procs)
    stopped = set()
    all_stopped = gevent.event.Event()

    def mark_stopped(i):
        stopped.add(i)
        if len(stopped) == len(procs):
            all_stopped.set()

    def coordinator():
        # Bounded: a worker wedged past its duration must not hang the run; the
        # others sweep anyway (their states may then be slightly early).
        all_stopped.wait(timeout=configs[0].duration + 120.0)
        for p in procs:
            try:
                p.stdin.write(b"sweep\n")
                p.stdin.close()
            except OSError:
                pass  # that worker is gone; its reader reports it

    def reader(i, p):
        try:
            _read(i, p)
        finally:
            mark_stopped(i)  # a dead worker must not hold the others' sweep back
        p.wait()

    def _read(i, p):
        for line in p.stdout:
            kind, _, payload = line.partition(b" ")
            if kind == b"stopped":
                mark_stopped(i)
            elif kind == b"progress":
                latest[i] = orjson.loads(payload)
                if on_progress is not None:
                    on_progress(_sum_progress(latest))
            elif kind == b"result":
                outcome[i] = Results.from_json(orjson.loads(payload))
            elif kind == b"error":
                outcome[i] = orjson.loads(payload)["error"]

    readers = [gevent.spawn(reader, i, p) for i, p in enumerate(procs)]
    coord = gevent.spawn(coordinator)
    try:
        gevent.joinall(readers + [coord], raise_error=True)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    merged = Results()
    failures = []
    for i, res in enumerate(outcome):
        if isinstance(res, Results):
            merged.merge(res)
        else:
            failures.append(f"worker {i}: {res or 'exited without a result (code %s)' % procs[i].returncode}")
    if failures and len(failures) == len(procs):
        raise LoadgenError("; ".join(failures))
    for f in failures:
        merged.errors["worker failed"] = merged.errors.get("worker failed", 0) + 1
        merged.notes.append(f)
    merged.notes.append(note)
    return merged


def _sum_progress(items):
    return {
        "elapsed": max(p["elapsed"] for p in items),
        "requests": sum(p["requests"] for p in items),
        "errors": sum(p["errors"] for p in items),
        "orders": sum(p["orders"] for p in items),
    }


def main():
    """Worker process: config on stdin, progress and result lines on stdout."""
    raise_fd_limit()
    cfg = TaxiConfig(**json.loads(sys.stdin.readline()))
    out = sys.stdout.buffer

    def emit(kind, obj):
        out.write(kind + b" " + orjson.dumps(obj) + b"\n")
        out.flush()

    try:
        sim = Simulation(cfg)
    except LoadgenError as e:
        emit(b"error", {"error": str(e)})
        return 1
    ticker = gevent.spawn(_tick, sim, lambda p: emit(b"progress", p))
    try:
        sim.load()
    finally:
        ticker.kill()
    emit(b"stopped", {})
    sys.stdin.readline()  # "sweep": every worker has stopped its drivers
    results = sim.finish()
    emit(b"result", results.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
