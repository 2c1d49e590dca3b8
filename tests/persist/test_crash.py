"""Crash tests with real processes: a child under concurrent fsync (or write) load is killed with
SIGKILL after a random number of acknowledgements (not after a sleep), restarted, and
what it acknowledged is checked against what recovery brings back.
"""
import os
import random
import signal
import time
import traceback

import orjson
import pytest
from gevent.fileobject import FileObjectPosix

from . import crash_child

KILLS = int(os.environ.get("KILLS", 22))


class Model:
    """What the children acknowledged, across restarts."""

    def __init__(self):
        self.live = {}  # id -> data: put acknowledged, not acked
        self.acked = set()
        self.ack_intent = set()
        self.max_id = 0
        self.floor = 0  # ids assigned after a restart must exceed this

    def restart(self, recovered):
        tasks = {tid: (state, data) for tid, state, data in recovered["tasks"]}
        for tid, data in self.live.items():
            if tid in self.ack_intent:
                continue  # its ack may have become durable before the kill
            assert tid in tasks, f"acknowledged put {tid} ({data}) was lost"
            assert tasks[tid][1] == data
        for tid in self.acked:
            assert tid not in tasks, f"acked task {tid} came back"
        assert not [t for t, (s, _d) in tasks.items() if s == "taken"], "taken tasks must be ready again"
        datas = [d for _s, d in tasks.values()]
        assert len(datas) == len(set(datas)), "a task was duplicated"
        self.live = {tid: data for tid, (_s, data) in tasks.items()}
        self.ack_intent = set()
        self.floor = max([self.max_id, *tasks])

    def line(self, kind, rest):
        if kind == "P":
            tid, data = rest.split(" ", 1)
            tid = int(tid)
            assert tid > self.floor, f"id {tid} not above {self.floor} (ids must keep increasing)"
            assert tid not in self.live and tid not in self.acked
            self.live[tid] = data
            self.max_id = max(self.max_id, tid)
        elif kind == "T":
            assert int(rest) in self.live, f"took {rest}, which is not live"
        elif kind == "a":
            self.ack_intent.add(int(rest))
        elif kind == "A":
            tid = int(rest)
            self.live.pop(tid)
            self.acked.add(tid)


def start_child(data_dir, seed, wal_mode):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns
        code = 1
        try:
            os.close(r)
            crash_child.run(data_dir, w, seed, wal_mode=wal_mode)
            code = 0
        except BaseException:
            traceback.print_exc()  # pytest shows it with the failure
            raise
        finally:
            os._exit(code)
    os.close(w)
    # A cooperative reader: gevent's os.close defers closing a pipe to the loop, so a
    # reader that blocked the loop would keep our copy of the write end open for ever.
    return pid, FileObjectPosix(r, "rb")


@pytest.mark.parametrize("wal_mode", ["fsync", "write"])
def test_sigkill_under_load_loses_nothing_acknowledged(tmp_path, wal_mode):
    rng = random.Random(int.from_bytes(os.urandom(4), "little"))
    seed0 = rng.randrange(1 << 30)
    data_dir = str(tmp_path / "data")
    model = Model()
    total_acks = 0
    t0 = time.monotonic()
    for cycle in range(KILLS + 1):
        pid, stream = start_child(data_dir, seed0 + cycle, wal_mode)
        kill_after = rng.randrange(20, 400)
        seen = 0
        killed = False
        try:
            first = stream.readline()
            assert first.startswith(b"S "), (seed0, cycle, first[:200])
            model.restart(orjson.loads(first[2:]))
            if cycle == KILLS:
                os.kill(pid, signal.SIGKILL)
                killed = True
            for raw in stream:
                if not raw.endswith(b"\n"):
                    break  # the kill cut this line short
                kind, _, rest = raw.decode().rstrip("\n").partition(" ")
                model.line(kind, rest)
                seen += 1
                if not killed and seen >= kill_after:
                    os.kill(pid, signal.SIGKILL)
                    killed = True
        finally:
            if not killed:
                os.kill(pid, signal.SIGKILL)
            stream.close()
            _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (seed0, cycle, status)
        total_acks += seen
        if os.environ.get("CRASH_DEBUG"):
            print(cycle, seen, time.monotonic() - t0)
    assert total_acks >= KILLS * 20
    snaps = os.listdir(os.path.join(data_dir, "snap"))
    assert snaps, "every restart takes a snapshot of what it recovered"
