"""Instructions per put + take + ack cycle through the queue store's own path, per wal_mode.

    .venv/bin/python -m bench.store_instructions count [--modes none,write] [--n 20000]
    .venv/bin/python -m bench.store_instructions run MODE FIBERS N     # the loop alone

``count`` runs ``run`` under cachegrind (``--cache-sim=no``: instruction counts only, which
the machine's load does not change) at N and at 2N cycles and prints (I(2N) - I(N)) / N,
so start-up, recovery and the tube's set-up cancel out. The loop is bench/persist.py's
worker without its timing: ``tube.put`` / ``tube.take(timeout=0)`` / ``tube.ack`` of
100-byte tasks on a fifo tube of an ``open_store`` store, from plain gevent greenlets that
yield every 64 cycles. Modes: none (no journal), stub (a journal that
keeps nothing: the store's op records without the WAL), write (1 fiber), write50 (50 fibers), and
fsync50 (fsync, 50 fibers: callgrind serialises the WAL thread, and batch sizes depend on
timing, so read that one as a rough figure).

For a profile of where a cycle goes::

    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \
        .venv/bin/python -m bench.store_instructions run write 1 20000
    callgrind_annotate /tmp/cg.out | head -60
"""
from fiberapp.runtime.patch import patch_all

patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

import gevent  # noqa: E402

from fiberapp.runtime.clock import SystemClock  # noqa: E402
from queues.persist import open_store  # noqa: E402
from queues.store import Store  # noqa: E402

DATA = b"x" * 100
MODES = {"none": ("none", 1), "stub": ("stub", 1), "write": ("write", 1), "write50": ("write", 50),
         "fsync50": ("fsync", 50)}


class StubJournal:
    """Takes every op and keeps nothing: the store builds its op records as with a WAL
    (it is not the NullJournal), so ``stub`` minus ``none`` is the cost of building them
    and ``write`` minus ``stub`` the WAL's own."""

    def log(self, op):
        return None

    def wait(self, token):
        return None


def run(wal_mode, fibers, n):
    """n put + take + ack cycles split over ``fibers`` greenlets; returns cycles done."""
    data_dir = tempfile.mkdtemp()
    try:
        if wal_mode == "stub":
            store, persistence = Store(SystemClock(), journal=StubJournal()), None
        else:
            store, persistence = open_store(data_dir, SystemClock(), wal_mode=wal_mode,
                                            checkpoint_wal_threshold=1 << 40)
        tube = store.create_tube("bench", "fifo")
        done = [0]
        per_fiber = n // fibers

        def worker():
            put, take, ack = tube.put, tube.take, tube.ack
            for i in range(per_fiber):
                if i % 64 == 0:
                    gevent.sleep(0)  # as bench/persist.py: let the other fibers run
                put(DATA)
                task = take(timeout=0)
                if task is not None:
                    ack(task.id)
                    done[0] += 1

        gevent.joinall([gevent.spawn(worker) for _ in range(fibers)], raise_error=True)
        if persistence is not None:
            persistence.close()
        return done[0]
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def instructions(mode, n):
    """Total instructions of one ``run`` process (cachegrind, no cache simulation)."""
    cmd = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
           sys.executable, "-m", "bench.store_instructions", "run", mode, str(n)]
    env = dict(os.environ, PYTHONHASHSEED="0")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stderr
    match = re.search(r"I\s+refs:\s+([\d,]+)", out)
    if match is None:
        raise RuntimeError("no instruction count in valgrind's output:\n" + out[-2000:])
    return int(match.group(1).replace(",", ""))


def count(args):
    for mode in args.modes.split(","):
        small, big = instructions(mode, args.n), instructions(mode, 2 * args.n)
        print(f"{mode:8} {(big - small) / args.n:>10,.0f} instructions per cycle "
              f"(I({2 * args.n}) {big:,} - I({args.n}) {small:,}, / {args.n})", flush=True)


def main():
    parser = argparse.ArgumentParser(prog="bench.store_instructions", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    c = sub.add_parser("count")
    c.add_argument("--modes", default="none,write")
    c.add_argument("--n", type=int, default=20000)
    r = sub.add_parser("run")
    r.add_argument("mode", choices=sorted(MODES))
    r.add_argument("n", type=int)
    args = parser.parse_args()
    if args.what == "count":
        count(args)
    else:
        wal_mode, fibers = MODES[args.mode]
        done = run(wal_mode, fibers, args.n)
        if done != args.n // fibers * fibers:
            raise SystemExit(f"only {done} of {args.n} cycles completed")


if __name__ == "__main__":
    main()
