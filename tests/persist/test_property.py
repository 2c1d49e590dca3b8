"""Property: for any history of operations and clock movements, the state recovered from
snapshot + WAL equals the state before the restart (canonical dumps compared)."""
import shutil
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fiberapp.runtime.clock import FakeClock
from queues.errors import QueueError
from queues.persist import Persistence
from queues.persist.disk import Disk
from queues.persist.recovery import Recovery
from queues.persist.store_adapter import QueueStoreAdapter
from queues.persist.timeconv import shift, wall_offset

TUBES = {"plain": ("fifo", {}), "ttl": ("fifottl", {"ttr": 5.0}), "keyed": ("utubettl", {"ttr": 3.0})}

actions = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(sorted(TUBES)), st.binary(max_size=8),
              st.sampled_from([None, 0.5, 4.0]), st.sampled_from([None, 2.0, 30.0])),
    st.tuples(st.just("take"), st.sampled_from(sorted(TUBES))),
    st.tuples(st.just("ack"), st.integers(1, 30)),
    st.tuples(st.just("release"), st.integers(1, 30), st.sampled_from([0, 1.5])),
    st.tuples(st.just("bury"), st.integers(1, 30)),
    st.tuples(st.just("kick"), st.sampled_from(sorted(TUBES))),
    st.tuples(st.just("delete"), st.integers(1, 30)),
    st.tuples(st.just("advance"), st.sampled_from([0.3, 1.0, 3.0, 10.0])),
    st.tuples(st.just("snapshot")),
)


def run(store, persistence, clock, history, sessions):
    tubes = {name: store.create_tube(name, driver, **opts) for name, (driver, opts) in TUBES.items()}
    where = {}
    for action in history:
        kind = action[0]
        try:
            if kind == "put":
                _, name, data, delay, ttl = action
                opts = {}
                if name != "plain":
                    opts = {"delay": delay, "ttl": ttl}
                if name == "keyed":
                    opts["utube"] = "u%d" % (len(data) % 2)
                where[tubes[name].put(data, **opts).id] = name
            elif kind == "take":
                got = tubes[action[1]].take(timeout=0, session=sessions[0])
                if got is not None:
                    where[got.id] = action[1]
            elif kind in ("ack", "release", "bury", "delete") and action[1] in where:
                tube = tubes[where[action[1]]]
                if kind == "ack":
                    tube.ack(action[1], session=sessions[0])
                elif kind == "release":
                    tube.release(action[1], delay=action[2] if tube.name != "plain" else 0,
                                 session=sessions[0])
                else:
                    getattr(tube, kind)(action[1])
            elif kind == "kick":
                tubes[action[1]].kick(2)
            elif kind == "advance":
                clock.advance(action[1])
                store.tick()
            elif kind == "snapshot":
                persistence.snapshot()
        except QueueError:
            pass  # refused operations change nothing; that is part of the property


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=st.lists(actions, max_size=40), downtime=st.sampled_from([0.0, 7.0, 3600.0]),
       mode=st.sampled_from(["write", "fsync"]))
def test_recovered_state_equals_the_state_before(history, downtime, mode):
    data_dir = tempfile.mkdtemp()
    try:
        clock = FakeClock()
        adapter = QueueStoreAdapter(clock)
        p = Persistence(data_dir, clock, adapter, wal_mode=mode, snapshot_fork=False,
                        wal_max_size=700, checkpoint_count=2)
        store = p.open()
        session = store.sessions.open("worker") if hasattr(store.sessions, "open") else None
        run(store, p, clock, history, [session])
        before = store.dump()
        offset_before = wall_offset(clock)
        p.close()

        # Restart on a new monotonic clock after some downtime: every deadline keeps its
        # wall-clock instant, i.e. moves by exactly the change of offset.
        later = FakeClock(start=50.0, wall=clock.time() + downtime)
        recovery = Recovery(p.wal_dir, p.snap_dir, later, Disk())
        recovered, _result = recovery.run(QueueStoreAdapter(later).new, QueueStoreAdapter(later).load,
                                          adapter.applier)
        assert recovered.dump() == shift(before, offset_before - wall_offset(later))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
