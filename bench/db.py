"""PostgreSQL throughput: fibers over fiberapp's pool vs a thread-per-request baseline.

    .venv/bin/python -m bench.db [--dsn DSN] [--duration 3] [--runs 3]

Two experiments, each side by side in one run, medians of --runs:

1. A trivial query (SELECT %s::int + 1) through PgPool with 1, 10 and 100 fibers, and
   through a ThreadPoolExecutor of 8 and 30 threads with plain psycopg (one connection
   per thread).
2. A query that waits 5 ms in the database (SELECT pg_sleep(0.005)): 200 fibers over a
   pool of 50 against 8 (and 30) blocking threads: the case for fibers.

Each line gives the median queries per second, the median CPU time the client process
spent per query (user + system, all threads), and every run's q/s.

The thread baseline runs in a separate process that is NOT monkey-patched (this one is,
and patched threads would be greenlets): `python -m bench.db --threads N ...` is that
worker; it prints one JSON line.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from bench.common import cpu_pressure

DEFAULT_DSN = os.environ.get("FIBERAPP_TEST_PG_DSN") or "postgresql://postgres@127.0.0.1:5432/test"
FAST = "SELECT %s::int + 1"
SLOW = "SELECT pg_sleep(0.005)"
# --one scenarios: (fibers, pool size, query)
ONE = {"fast1": (1, 1, FAST), "fast10": (10, 10, FAST), "slow200": (200, 50, SLOW)}


def _params(query, i):
    return (i,) if "%s" in query else None


# -- the unpatched thread worker ------------------------------------------------------------

def thread_worker(dsn, threads, query, duration):
    """Plain psycopg, one connection per thread, every thread querying until the deadline."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import psycopg

    local = threading.local()
    conns = []
    lock = threading.Lock()

    def connection():
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = psycopg.connect(dsn, autocommit=True)
            with lock:
                conns.append(conn)
        return conn

    # Connect every thread first, so connection set-up is not timed.
    with ThreadPoolExecutor(threads) as pool:
        barrier = threading.Barrier(threads)

        def warm(_):
            connection().execute("SELECT 1")
            barrier.wait()

        list(pool.map(warm, range(threads)))
        deadline = time.monotonic() + duration

        def loop(_):
            conn, n = connection(), 0
            while time.monotonic() < deadline:
                conn.execute(query, _params(query, n)).fetchone()
                n += 1
            return n

        start, cpu0 = time.monotonic(), _cpu()
        total = sum(pool.map(loop, range(threads)))
        elapsed, cpu = time.monotonic() - start, _cpu() - cpu0
    for conn in conns:
        conn.close()
    return total / elapsed, cpu / total * 1e6


def run_threads(dsn, threads, query, duration):
    out = subprocess.run(
        [sys.executable, "-m", "bench.db", "--threads", str(threads), "--query", query,
         "--duration", str(duration), "--dsn", dsn],
        check=True, capture_output=True, text=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["qps"], result["cpu_us"]


# -- the patched fiber side ------------------------------------------------------------------

def run_fibers(runtime, dsn, fibers, pool_size, query, duration, queries=0):
    """Queries per second with `fibers` fibers sharing a PgPool of pool_size; with
    queries > 0, each fiber runs queries // fibers queries instead of until duration."""
    import gevent

    from fiberapp.db.pg import PgPool

    pool = PgPool(dsn, runtime=runtime, min_size=pool_size, max_size=pool_size, max_wait=30,
                  application_name="fiberapp-bench")
    pool.open(wait=True, timeout=30)
    try:
        deadline = time.monotonic() + duration
        counts = [0] * fibers

        def loop(slot):
            n = 0
            if queries:
                for n in range(queries // fibers):
                    pool.fetch_val(query, _params(query, n))
                counts[slot] = queries // fibers
                return
            while time.monotonic() < deadline:
                pool.fetch_val(query, _params(query, n))
                n += 1
            counts[slot] = n

        start, cpu0 = time.monotonic(), _cpu()
        workers = [runtime.spawn(loop, i, name=f"bench-{i}") for i in range(fibers)]
        gevent.joinall(workers, raise_error=True)
        elapsed, cpu = time.monotonic() - start, _cpu() - cpu0
        return sum(counts) / elapsed, cpu / sum(counts) * 1e6
    finally:
        pool.close()


def _cpu():
    """CPU seconds (user + system) used by this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def median_of(runs, fn):
    """fn() -> (qps, cpu_us_per_query); returns the medians and the raw q/s values."""
    values = [fn() for _ in range(runs)]
    return statistics.median(v[0] for v in values), statistics.median(v[1] for v in values), [v[0] for v in values]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.db", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--runs", type=int, default=3, help="measurements per configuration (median)")
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)  # worker mode
    parser.add_argument("--query", default=FAST, help=argparse.SUPPRESS)
    parser.add_argument("--one", choices=sorted(ONE), help="run one fiber scenario once, no threads"
                        " (for cachegrind/cProfile): " + "; ".join(f"{k}: {v[0]} fibers, pool {v[1]}, {v[2]}"
                                                                    for k, v in sorted(ONE.items()))
                        .replace("%", "%%"))  # the queries hold %s; argparse formats help
    parser.add_argument("--queries", type=int, default=0, help="with --one: stop after this many queries"
                        " instead of --duration (a fixed amount of work, for instruction counts)")
    args = parser.parse_args(argv)

    if args.threads:
        qps, cpu_us = thread_worker(args.dsn, args.threads, args.query, args.duration)
        print(json.dumps({"qps": qps, "cpu_us": cpu_us}))
        return

    from fiberapp.runtime.patch import patch_all

    patch_all()  # before psycopg is imported in this process
    from fiberapp.runtime.fiber import Runtime

    runtime = Runtime(watchdog_limit=0, cpu_accounting=False)
    runtime.start()
    if args.one:
        fibers, size, query = ONE[args.one]
        qps, cpu_us = run_fibers(runtime, args.dsn, fibers, size, query, args.duration, args.queries)
        print(f"{args.one}: {fibers} fibers, pool of {size}, {query}: {qps:.0f} q/s, {cpu_us:.0f} us CPU/query")
        runtime.stop()
        return
    rows = []

    def measure(label, fn):
        med, cpu_us, values = median_of(args.runs, fn)
        rows.append((label, med, values))
        print(f"{label:<50} {med:>7.0f} q/s {cpu_us:>5.0f} us CPU/query   runs: {', '.join(f'{v:.0f}' for v in values)}",
              flush=True)
        return med

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.runs} runs x {args.duration}s each,"
          f" load {os.getloadavg()[0]:.1f}, CPU pressure (PSI some avg10) {cpu_pressure():.0f}%\n")
    print(f"1) {FAST}")
    t8 = measure("threads: 8 threads, 8 connections (unpatched)", lambda: run_threads(args.dsn, 8, FAST, args.duration))
    t30 = measure("threads: 30 threads, 30 connections (unpatched)", lambda: run_threads(args.dsn, 30, FAST, args.duration))
    f1 = measure("fibers: 1 fiber, pool of 1", lambda: run_fibers(runtime, args.dsn, 1, 1, FAST, args.duration))
    f10 = measure("fibers: 10 fibers, pool of 10", lambda: run_fibers(runtime, args.dsn, 10, 10, FAST, args.duration))
    f100 = measure("fibers: 100 fibers, pool of 50", lambda: run_fibers(runtime, args.dsn, 100, 50, FAST, args.duration))
    print(f"   ratios vs 8 threads: 1 fiber {f1 / t8:.2f}x, 10 fibers {f10 / t8:.2f}x, 100 fibers {f100 / t8:.2f}x;"
          f" 30 threads {t30 / t8:.2f}x\n")

    print(f"2) {SLOW}")
    s8 = measure("threads: 8 threads, 8 connections (unpatched)", lambda: run_threads(args.dsn, 8, SLOW, args.duration))
    s30 = measure("threads: 30 threads, 30 connections (unpatched)", lambda: run_threads(args.dsn, 30, SLOW, args.duration))
    s200 = measure("fibers: 200 fibers, pool of 50", lambda: run_fibers(runtime, args.dsn, 200, 50, SLOW, args.duration))
    print(f"   200 fibers / 8 threads = {s200 / s8:.2f}x (target >= 5x); 200 fibers / 30 threads = {s200 / s30:.2f}x")
    print(f"\nload {os.getloadavg()[0]:.1f}, CPU pressure (PSI some avg10) {cpu_pressure():.0f}% at the end")
    runtime.stop()


if __name__ == "__main__":
    main()
