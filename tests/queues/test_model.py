"""Property test: the store against a tiny model under random operations and clock jumps.

The model is a dict of task records and the rules of README's state diagram written out
directly (no heaps, no lazy deletion, no ops). After every step the live tasks, their states
and counters must agree; at the end, replaying the recorded op log must rebuild the same
dump (the WAL contract).
"""
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from fiberapp.runtime.clock import FakeClock
from queues import errors
from queues.store import Store
from tests.queues.conftest import RecordingJournal, replay

DURATIONS = st.sampled_from([None, 1, 2.5, 5])
DELAYS = st.sampled_from([None, 0, 1, 3])


class Model:
    def __init__(self):
        self.tasks = {}
        self.next_id = 1

    def put(self, now, pri, ttl, ttr, delay):
        tid = self.next_id
        self.next_id += 1
        if delay:
            ready_at = start = now + delay
            state = "delayed"
        else:
            ready_at, start, state = None, now, "ready"
        self.tasks[tid] = dict(state=state, pri=pri, ttl=ttl, ttr=ttr, ready_at=ready_at,
                               expires_at=None if ttl is None else start + ttl, ttr_at=None,
                               attempts=0, timeouts=0, releases=0)
        return tid

    def take(self, now):
        ready = [(t["pri"], tid) for tid, t in self.tasks.items() if t["state"] == "ready"]
        if not ready:
            return None
        _, tid = min(ready)
        t = self.tasks[tid]
        t.update(state="taken", ttr_at=None if t["ttr"] is None else now + t["ttr"])
        t["attempts"] += 1
        return tid

    def requeue(self, tid, now, delay=0):
        t = self.tasks[tid]
        if t["expires_at"] is not None and t["expires_at"] <= now:
            del self.tasks[tid]
        elif delay:
            t.update(state="delayed", ready_at=now + delay,
                     expires_at=None if t["expires_at"] is None else t["expires_at"] + delay)
        else:
            t["state"] = "ready"

    def settle(self, now):
        while True:
            changed = False
            for tid, t in list(self.tasks.items()):
                s = t["state"]
                if s == "delayed" and t["ready_at"] <= now:
                    t["state"] = "ready"
                elif s == "taken" and t["ttr_at"] is not None and t["ttr_at"] <= now:
                    t["timeouts"] += 1
                    self.requeue(tid, now)
                elif s in ("ready", "buried") and t["expires_at"] is not None and t["expires_at"] <= now:
                    del self.tasks[tid]
                else:
                    continue
                changed = True
            if not changed:
                return


class StoreVsModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.clock = FakeClock()
        self.journal = RecordingJournal()
        self.store = Store(clock=self.clock, journal=self.journal)
        self.tube = self.store.create_tube("t", "fifottl")
        self.model = Model()

    def now(self):
        return self.clock.monotonic()

    def ids(self, state=None):
        return sorted(tid for tid, t in self.model.tasks.items() if state is None or t["state"] == state)

    @rule(pri=st.integers(0, 3), ttl=DURATIONS, ttr=DURATIONS, delay=DELAYS)
    def put(self, pri, ttl, ttr, delay):
        task = self.tube.put("x", pri=pri, ttl=ttl, ttr=ttr, delay=delay)
        assert task.id == self.model.put(self.now(), pri, ttl, ttr, delay)

    @rule()
    def take(self):
        task = self.tube.take(timeout=0)
        expected = self.model.take(self.now())
        assert (task.id if task else None) == expected

    @precondition(lambda self: self.ids("taken"))
    @rule(data=st.data(), delay=st.sampled_from([0, 0, 2]))
    def release(self, data, delay):
        tid = data.draw(st.sampled_from(self.ids("taken")))
        self.tube.release(tid, delay=delay)
        self.model.tasks[tid]["releases"] += 1
        self.model.requeue(tid, self.now(), delay)

    @precondition(lambda self: self.ids("taken"))
    @rule(data=st.data())
    def ack(self, data):
        tid = data.draw(st.sampled_from(self.ids("taken")))
        self.tube.ack(tid)
        del self.model.tasks[tid]

    @precondition(lambda self: self.ids("taken"))
    @rule(data=st.data(), delta=st.sampled_from([1, 4]))
    def touch(self, data, delta):
        tid = data.draw(st.sampled_from(self.ids("taken")))
        self.tube.touch(tid, delta)
        t = self.model.tasks[tid]
        if t["ttr_at"] is not None:
            t["ttr_at"] += delta

    @precondition(lambda self: self.ids())
    @rule(data=st.data())
    def bury(self, data):
        tid = data.draw(st.sampled_from(self.ids()))
        t = self.model.tasks[tid]
        if t["state"] == "buried":
            with pytest.raises(errors.WrongState):
                self.tube.bury(tid)
        else:
            self.tube.bury(tid)
            t["state"] = "buried"
            self.settle()  # its ttl may have passed while it was taken: expires at once

    @rule(n=st.integers(0, 3))
    def kick(self, n):
        buried = sorted((t["pri"], tid) for tid, t in self.model.tasks.items() if t["state"] == "buried")
        assert self.tube.kick(n) == min(n, len(buried))
        for _, tid in buried[:n]:
            self.model.tasks[tid]["state"] = "ready"
        self.settle()

    @precondition(lambda self: self.ids())
    @rule(data=st.data())
    def delete(self, data):
        tid = data.draw(st.sampled_from(self.ids()))
        self.tube.delete(tid)
        del self.model.tasks[tid]

    def settle(self):
        """What the ticker does at once (deadlines already past), in store and model."""
        self.store.tick()
        self.model.settle(self.now())

    @rule(dt=st.sampled_from([0.5, 1, 2.5, 6]))
    def advance(self, dt):
        self.clock.advance(dt)
        self.settle()

    @invariant()
    def agree(self):
        live = {t.id: t for t in self.tube.tasks(limit=None)}
        assert sorted(live) == self.ids()
        for tid, m in self.model.tasks.items():
            t = live[tid]
            assert (t.state, t.pri, t.attempts, t.timeouts, t.releases, t.expires_at) == (
                m["state"], m["pri"], m["attempts"], m["timeouts"], m["releases"], m["expires_at"]), tid
            if m["state"] == "delayed":
                assert t.ready_at == m["ready_at"]
            if m["state"] == "taken":
                assert t.ttr_at == m["ttr_at"]
        counts = self.tube.statistics()["tasks"]
        for state in ("ready", "taken", "delayed", "buried"):
            assert counts[state] == len(self.ids(state))

    def teardown(self):
        rebuilt = replay(self.journal.ops(), self.clock)
        assert rebuilt.dump() == self.store.dump()


StoreVsModel.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_store_matches_model = StoreVsModel.TestCase
