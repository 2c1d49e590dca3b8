"""Queue store throughput: put + take + ack cycles of a 100-byte task, in-process, one fiber,
store only (null journal), against a bare-Python deque + dict doing the same bookkeeping in
the same run.

    .venv/bin/python -m bench.queues                 # every scenario, 5 runs each
    .venv/bin/python -m bench.queues --runs 3 --cycles 100000 --only empty,ready_10k
    valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \
        .venv/bin/python -m bench.queues --one empty --cycles 30000   # instructions

Scenarios (the backlog stays constant while the cycles run):
    empty         nothing else in the tube
    ready_10k     10,000 ready tasks waiting
    ready_1m      1,000,000 ready tasks waiting
    delayed_100k  fifottl tube with 100,000 delayed tasks
    utube_10k     utube tube, 10 ready tasks on each of 10,000 keys, cycles spread over the keys

For each: the median over runs of cycles/s by wall clock and by process CPU time (the host
is shared: CPU time is less disturbed by other processes), and the ratio to the bare-Python
baseline's median measured the same way in the same process. Performance is measured,
never asserted.
"""
import argparse
import gc
import statistics
import sys
import time
from collections import deque

DATA = b"x" * 100


def bare_python(cycles):
    """The same bookkeeping with nothing else: a deque of ids and a dict of records."""
    queue = deque()
    records = {}
    next_id = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(cycles):
        next_id += 1
        records[next_id] = [next_id, "r", DATA]
        queue.append(next_id)
        tid = queue.popleft()
        rec = records[tid]
        rec[1] = "t"
        del records[tid]
    return time.perf_counter() - t0, time.process_time() - c0


def make_store(scenario):
    from queues.store import Store

    store = Store()
    if scenario in ("empty", "ready_10k", "ready_1m"):
        tube = store.create_tube("bench", "fifo")
        backlog = {"empty": 0, "ready_10k": 10_000, "ready_1m": 1_000_000}[scenario]
        if backlog:
            for start in range(0, backlog, 10_000):
                tube.put_many([{"data": DATA}] * min(10_000, backlog - start))
        return store, tube, None
    if scenario == "delayed_100k":
        tube = store.create_tube("bench", "fifottl")
        for start in range(0, 100_000, 10_000):
            tube.put_many([{"data": DATA, "delay": 1e6}] * 10_000)
        return store, tube, None
    if scenario == "utube_10k":
        tube = store.create_tube("bench", "utube")
        keys = [f"k{i}" for i in range(10_000)]
        for _ in range(10):
            tube.put_many([{"data": DATA, "utube": k} for k in keys])
        return store, tube, keys
    raise SystemExit(f"unknown scenario {scenario!r}")


def store_cycles(tube, keys, cycles):
    put, take, ack = tube.put, tube.take, tube.ack
    t0, c0 = time.perf_counter(), time.process_time()
    if keys is None:
        for _ in range(cycles):
            put(DATA)
            ack(take(0).id)
    else:
        n = len(keys)
        for i in range(cycles):
            put(DATA, utube=keys[i % n])
            ack(take(0).id)
    return time.perf_counter() - t0, time.process_time() - c0


SCENARIOS = ("empty", "ready_10k", "ready_1m", "delayed_100k", "utube_10k")


def main(argv=None):
    from fiberapp.runtime.patch import patch_all

    patch_all()
    parser = argparse.ArgumentParser(prog="python -m bench.queues", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cycles", type=int, default=200_000)
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument("--one", metavar="SCENARIO",
                        help="run one scenario (or 'bare') once, print nothing: for instruction "
                             "counting under valgrind, where the noise of a shared host vanishes")
    args = parser.parse_args(argv)
    if args.one:
        if args.one == "bare":
            bare_python(args.cycles)
        else:
            _, tube, keys = make_store(args.one)
            store_cycles(tube, keys, args.cycles)
        return
    scenarios = [s for s in args.only.split(",") if s]
    print(f"python {sys.version.split()[0]}; {args.runs} runs x {args.cycles} cycles; 100-byte tasks")
    base_wall, base_cpu = [], []
    for _ in range(args.runs):
        wall, cpu = bare_python(args.cycles)
        base_wall.append(args.cycles / wall)
        base_cpu.append(args.cycles / cpu)
    bw, bc = statistics.median(base_wall), statistics.median(base_cpu)
    print(f"{'scenario':<14}{'cycles/s wall':>16}{'cycles/s cpu':>16}{'ratio (cpu)':>14}")
    print(f"{'bare python':<14}{bw:>16,.0f}{bc:>16,.0f}{1.0:>14.3f}")
    for scenario in scenarios:
        store, tube, keys = make_store(scenario)
        gc.collect()
        walls, cpus = [], []
        store_cycles(tube, keys, min(args.cycles, 10_000))  # warm-up
        for _ in range(args.runs):
            wall, cpu = store_cycles(tube, keys, args.cycles)
            walls.append(args.cycles / wall)
            cpus.append(args.cycles / cpu)
        w, c = statistics.median(walls), statistics.median(cpus)
        backlog = tube.statistics()["tasks"]["total"]
        print(f"{scenario:<14}{w:>16,.0f}{c:>16,.0f}{c / bc:>14.3f}   (backlog {backlog:,})")
        del store, tube
        gc.collect()


if __name__ == "__main__":
    main()
