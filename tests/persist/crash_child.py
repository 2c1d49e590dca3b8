"""The load a crash test kills: a store with fsync (or write) persistence and many fibers doing
put / take / ack / release, reporting every acknowledged result as it happens.

Runs in a forked child (tests/persist/test_crash.py). Report lines, one os.write each
(atomic on a pipe: each is shorter than PIPE_BUF), written only after the call returned:

    S <json>        the state right after recovery: {"tasks": [[id, state, data], ...]}
    P <id> <data>   put acknowledged
    T <id>          take acknowledged
    a <id>          about to ack (the ack may be durable although its "A" never arrives)
    A <id>          ack acknowledged
    R <id>          release acknowledged
"""
import os
import random

import gevent
import orjson

from fiberapp.runtime.clock import SystemClock
import queues.store  # noqa: F401  (imported once in the parent, not in every child)
from queues.persist import open_store


def run(data_dir, out_fd, seed, fibers=16, wal_mode="fsync"):
    """Never returns: runs until killed. Both modes survive SIGKILL (write mode hands every
    record to the OS before the call returns), so the same checks apply to both."""
    store, persistence = open_store(
        data_dir, SystemClock(), wal_mode=wal_mode, wal_max_size=32 << 10,
        checkpoint_wal_threshold=8 << 10, checkpoint_interval=3600, checkpoint_count=2)
    persistence.start()
    tube = store.create_tube("q", "fifo", if_not_exists=True)

    def out(line):
        os.write(out_fd, line.encode() + b"\n")

    # A run is over in tens of milliseconds (write mode: a few), often before a checkpoint
    # started by the size trigger completes; how often one does depends on the machine's
    # speed. A snapshot of the recovered state makes every restart recover from a snapshot
    # plus the WAL after it, whatever the timing (the size-triggered ones still run, and
    # are killed at random moments).
    persistence.snapshot()
    state = [[t["id"], t["state"], t["data"]] for t in store.dump()["tasks"]]
    out("S " + orjson.dumps({"tasks": state}).decode())

    def worker(n):
        rng = random.Random(seed * 1000 + n)
        i = 0
        while True:
            i += 1
            if i % 8 == 0:
                # write mode never yields inside an op: let the checkpoint fiber run (a
                # server's fibers yield on their sockets)
                gevent.sleep(0)
            if wal_mode == "write" and n == 0 and i % 4 == 0:
                persistence.snapshot()  # see below: write mode's runs are short
            data = f"{seed}-{n}-{i}"
            task = tube.put(data)
            out(f"P {task.id} {data}")
            got = tube.take(timeout=0)
            if got is None:
                continue
            out(f"T {got.id}")
            r = rng.random()
            if r < 0.6:
                out(f"a {got.id}")
                tube.ack(got.id)
                out(f"A {got.id}")
            elif r < 0.9:
                tube.release(got.id)
                out(f"R {got.id}")
            # else: keep it taken; it must come back ready after the crash

    gevent.joinall([gevent.spawn(worker, n) for n in range(fibers)], raise_error=True)
