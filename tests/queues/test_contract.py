"""The contract every driver meets (huey's StorageTests pattern: one suite, every driver)."""
import gevent
import gevent.event
import pytest

from fiberapp.runtime.clock import FakeClock
from queues import errors
from queues.states import BURIED, DELAYED, READY, TAKEN
from queues.store import Store
from tests.queues.conftest import DRIVERS, RecordingJournal, no_switch, replay

pytestmark = pytest.mark.parametrize("driver", DRIVERS)


def make(store, driver, **options):
    return store.create_tube("t", driver, **options)


def test_put_take_ack_roundtrip(store, driver):
    tube = make(store, driver)
    task = tube.put({"n": 1})
    assert task.state == READY and task.data == {"n": 1}
    got = tube.take(timeout=0)
    assert got.id == task.id and got.state == TAKEN and got.attempts == 1
    done = tube.ack(got.id)
    assert done.state == "done"
    with pytest.raises(errors.NoSuchTask):
        tube.peek(task.id)
    assert tube.take(timeout=0) is None


def test_fifo_order_and_release_to_head(store, driver):
    tube = make(store, driver)
    ids = [tube.put(i).id for i in range(5)]
    if driver.startswith("utube"):
        # one taken task per sub-queue: use distinct keys so order is visible
        tube.truncate()
        ids = [tube.put(i, utube=f"k{i}").id for i in range(5)]
    first = tube.take(timeout=0)
    second = tube.take(timeout=0)
    assert [first.id, second.id] == ids[:2]
    tube.release(first.id)
    again = tube.take(timeout=0)
    assert again.id == ids[0], "a released task goes back to the head"
    assert again.attempts == 2 and again.releases == 1


def test_ids_unique_and_never_reused(store, driver):
    tube = make(store, driver)
    a = tube.put("a")
    b = tube.put("b")
    tube.delete(b.id)
    c = tube.put("c")
    assert c.id > b.id > a.id
    other = store.create_tube("other", driver)
    assert other.put("d").id > c.id


def test_take_timeout_returns_none_then_put_wakes_waiter(store, clock, driver):
    tube = make(store, driver)
    result = []
    waiter = gevent.spawn(lambda: result.append(tube.take(timeout=5)))
    gevent.idle()
    clock.advance(5)
    waiter.join(timeout=1)
    assert result == [None]
    result.clear()
    waiter = gevent.spawn(lambda: result.append(tube.take(timeout=10)))
    gevent.idle()
    clock.advance(1)
    assert result == []
    task = tube.put("wake")
    waiter.join(timeout=1)
    assert result and result[0].id == task.id


def test_waiters_served_in_arrival_order_one_put_wakes_one(store, clock, driver):
    tube = make(store, driver)
    got = []
    hold = gevent.event.Event()  # consumers stay alive: a dead fiber's tasks go back

    def consumer(name):
        task = tube.take(timeout=100)
        got.append((name, task.data if task else None))
        hold.wait()

    fibers = [gevent.spawn(consumer, n) for n in ("a", "b", "c")]
    gevent.idle()
    key = {"utube": "x"} if driver.startswith("utube") else {}
    tube.put(1, **({"utube": "1"} if key else {}))
    gevent.idle()
    gevent.sleep(0)
    assert got == [("a", 1)], "one put wakes exactly one waiter, the first"
    tube.put(2, **({"utube": "2"} if key else {}))
    tube.put(3, **({"utube": "3"} if key else {}))
    gevent.idle()
    gevent.sleep(0)
    assert got == [("a", 1), ("b", 2), ("c", 3)]
    hold.set()
    gevent.joinall(fibers, timeout=1)


def test_newcomer_does_not_barge_past_a_woken_waiter(store, driver):
    tube = make(store, driver)
    got = []
    waiter = gevent.spawn(lambda: got.append(("waiter", tube.take(timeout=100))))
    gevent.idle()
    tube.put("x")
    # the waiter is woken but has not run; a take now must not steal its task
    assert tube.take(timeout=0) is None
    gevent.idle()
    gevent.sleep(0)
    assert got[0][1].data == "x"


def test_cancelled_waiter_takes_nothing(store, clock, driver):
    tube = make(store, driver)
    got = []
    hold = gevent.event.Event()

    def consumer(name):
        got.append((name, tube.take(timeout=100)))
        hold.wait()

    a = gevent.spawn(consumer, "a")
    b = gevent.spawn(consumer, "b")
    gevent.idle()
    a.kill(block=False)  # the cancellation is delivered at a's next switch ...
    tube.put("only")     # ... after this put promised the task to a: a passes it on to b
    gevent.idle()
    gevent.sleep(0)
    assert [(n, t.data) for n, t in got] == [("b", "only")]
    assert tube.statistics()["tasks"]["taken"] == 1


def test_bury_and_kick(store, driver):
    tube = make(store, driver)
    tasks = [tube.put(i, **({"utube": str(i)} if driver.startswith("utube") else {})) for i in range(3)]
    taken = tube.take(timeout=0)
    tube.bury(taken.id)
    tube.bury(tasks[2].id)
    assert tube.peek(taken.id).state == BURIED and taken.buries == 1
    assert tube.statistics()["tasks"]["buried"] == 2
    assert tube.kick(1) == 1
    assert tube.peek(tasks[0].id).state == READY, "kick takes the lowest id first"
    assert tube.peek(tasks[2].id).state == BURIED
    assert tube.kick(10) == 1
    assert tube.kick(10) == 0
    assert tube.peek(tasks[0].id).kicks == 1


def test_delete_any_state_no_ownership(store, driver):
    tube = make(store, driver)
    t = tube.put("x")
    tube.take(timeout=0)
    other = []
    g = gevent.spawn(lambda: other.append(tube.delete(t.id)))
    g.join(timeout=1)
    assert other[0].state == "done"
    assert tube.statistics()["tasks"]["done"] == 1


def test_ownership_other_fiber_refused(store, driver):
    tube = make(store, driver)
    t = tube.put("x")
    tube.take(timeout=0)
    errs = []

    def intruder():
        for op in (lambda: tube.ack(t.id), lambda: tube.release(t.id)):
            try:
                op()
            except errors.NotOwner as exc:
                errs.append(exc.operation)

    gevent.spawn(intruder).join(timeout=1)
    assert errs == ["ack", "release"]
    tube.ack(t.id)  # the owner still can


def test_fiber_death_returns_its_tasks(store, driver):
    tube = make(store, driver)
    tube.put("x")
    done = gevent.event.Event()

    def consumer():
        assert tube.take(timeout=0) is not None
        done.set()

    g = gevent.spawn(consumer)
    done.wait(timeout=1)
    g.join(timeout=1)
    gevent.idle()
    gevent.sleep(0)
    gevent.idle()
    task = tube.tasks()[0]
    assert task.state == READY and task.releases == 1 and task.attempts == 1


def test_named_session_survives_reconnect(store, driver):
    tube = make(store, driver)
    tube.put("x")
    store.sessions.open("worker-1")
    holder = []

    def first_connection():
        store.sessions.bind("worker-1")
        holder.append(tube.take(timeout=0))

    gevent.spawn(first_connection).join(timeout=1)
    gevent.idle()
    task = holder[0]
    assert tube.peek(task.id).state == TAKEN, "a named session outlives its fiber"

    def second_connection():
        store.sessions.bind("worker-1")
        holder.append(tube.ack(task.id))

    gevent.spawn(second_connection).join(timeout=1)
    assert holder[1].state == "done"
    # ending a session releases what it holds
    tube.put("y")
    tube.take(timeout=0, session="worker-1")
    assert store.sessions.end("worker-1") == 1
    assert tube.statistics()["tasks"]["ready"] == 1


def test_unique_key_returns_existing(store, driver):
    tube = make(store, driver)
    a = tube.put("a", key="k1")
    b = tube.put("b", key="k1")
    assert b.id == a.id and b.existing and b.data == "a" and not a.existing
    assert tube.statistics()["tasks"]["total"] == 1
    tube.delete(a.id)
    c = tube.put("c", key="k1")
    assert c.id != a.id and not c.existing


def test_batch_put_and_take(store, driver):
    tube = make(store, driver)
    extra = {"utube": "u"} if driver.startswith("utube") else {}
    items = [dict(data=i, **({"utube": str(i)} if extra else {})) for i in range(5)]
    items.append({"data": "dup", "key": "k"})
    items.append({"data": "dup2", "key": "k"})
    out = tube.put_many(items)
    assert [t.data for t in out[:5]] == list(range(5))
    assert out[6].existing and out[6].id == out[5].id
    got = tube.take_many(3, timeout=0)
    assert len(got) == 3 and all(t.state == TAKEN for t in got)
    with pytest.raises(errors.InvalidOption):
        tube.put_many([{"data": 1}, {"nodata": 2}])
    assert tube.statistics()["tasks"]["total"] == 6, "a bad batch puts nothing"


def test_pause_and_drain(store, clock, driver):
    tube = make(store, driver)
    tube.pause(10)
    tube.put("x")  # puts accepted while paused
    assert tube.take(timeout=0) is None
    got = []
    g = gevent.spawn(lambda: got.append(tube.take(timeout=60)))
    gevent.idle()
    clock.advance(9)
    assert got == []
    clock.advance(1)
    g.join(timeout=1)
    assert got and got[0].data == "x"
    store.drain()
    with pytest.raises(errors.Draining):
        tube.put("y")
    assert tube.take(timeout=0) is not None, "takes are served while draining"
    store.drain(False)
    tube.put("y")


def test_hooks_see_every_change_and_errors_are_contained(store, driver):
    tube = make(store, driver)
    events = []
    tube.on_task_change(lambda task, event: events.append((task.id, event)))
    tube.on_task_change(lambda task, event: 1 / 0)
    t = tube.put("x")
    tube.take(timeout=0)
    tube.release(t.id)
    tube.take(timeout=0)
    tube.bury(t.id)
    tube.kick(1)
    tube.delete(t.id)
    assert [e for _, e in events] == ["put", "take", "release", "take", "bury", "kick", "delete"]
    assert tube.hook_errors == 7


def test_max_attempts_buries_or_dead_letters(store, driver):
    dead = store.create_tube("dead", "fifo")
    tube = store.create_tube("t", driver, max_attempts=2, dead_letter="dead")
    solo = store.create_tube("solo", driver, max_attempts=1)
    t = tube.put("x")
    tube.release(tube.take(timeout=0).id)
    assert tube.peek(t.id).state == READY
    tube.release(tube.take(timeout=0).id)
    with pytest.raises(errors.NoSuchTask):
        tube.peek(t.id)
    moved = dead.peek(t.id)
    assert moved.state == READY and moved.data == "x"
    assert moved.history[0]["tube"] == "t" and moved.history[0]["attempts"] == 2
    assert tube.statistics()["calls"]["dead_letter"] == 1
    s = solo.put("y")
    solo.release(solo.take(timeout=0).id)
    assert solo.peek(s.id).state == BURIED


def test_statistics_after_mixed_history(store, driver):
    tube = make(store, driver)
    u = (lambda i: {"utube": str(i)}) if driver.startswith("utube") else (lambda i: {})
    ts = [tube.put(i, **u(i)) for i in range(6)]
    a = tube.take(timeout=0)
    tube.ack(a.id)
    b = tube.take(timeout=0)
    tube.release(b.id)
    c = tube.take(timeout=0)
    tube.bury(ts[3].id)
    tube.delete(ts[4].id)
    stats = tube.statistics()
    assert stats["tasks"] == {"ready": 2, "taken": 1, "delayed": 0, "buried": 1, "done": 2, "total": 4}
    calls = stats["calls"]
    assert (calls["put"], calls["take"], calls["ack"], calls["release"], calls["bury"], calls["delete"]) == (6, 3, 1, 1, 1, 1)
    assert store.statistics()["t"]["tasks"]["taken"] == 1
    assert c.id == b.id


def test_validation_is_typed_and_loses_nothing(store, driver):
    tube = make(store, driver)
    tube.put("keep")
    with pytest.raises(errors.InvalidData):
        tube.put(object())
    with pytest.raises(errors.TaskTooLarge):
        Store(max_task_size=10).create_tube("x", driver).put(b"x" * 11)
    with pytest.raises(errors.InvalidOption) as exc:
        store.create_tube("u", driver, bogus=1)
    assert exc.value.option == "bogus"
    with pytest.raises(errors.InvalidName):
        store.create_tube("bad name!", driver)
    with pytest.raises(errors.InvalidOption):
        tube.take_many(0)
    with pytest.raises(errors.TubeExists):
        make(store, driver)
    assert make(store, driver, if_not_exists=True) is tube
    if driver == "fifo":
        with pytest.raises(errors.InvalidOption) as exc:
            tube.put("x", pri=1)
        assert exc.value.option == "pri"
        with pytest.raises(errors.Unsupported):
            tube.touch(1, 1)
    else:
        if "ttl" in driver:
            with pytest.raises(errors.InvalidOption):
                tube.put("x", ttl=-1)
            with pytest.raises(errors.InvalidOption):
                tube.put("x", pri=True)
    with pytest.raises(errors.NoSuchTask):
        tube.ack(999)
    assert [t.data for t in tube.tasks()] == ["keep"]


def test_operations_never_switch(store, driver):
    tube = make(store, driver)
    with no_switch():
        t = tube.put("x")
        tube.take(timeout=0)
        tube.release(t.id)
        tube.take(timeout=0)
        tube.ack(t.id)
        t2 = tube.put("y")
        tube.bury(t2.id)
        tube.kick(1)
        tube.delete(t2.id)
        tube.put_many([{"data": 1}, {"data": 2}])
        tube.take_many(2, timeout=0)
        store.tick()


def test_drop_tube(store, driver):
    tube = make(store, driver)
    tube.put("x")
    t = tube.take(timeout=0)
    with pytest.raises(errors.TubeBusy):
        store.drop_tube("t")
    tube.ack(t.id)
    store.drop_tube("t")
    with pytest.raises(errors.NoSuchTube):
        store.tube("t")
    with pytest.raises(errors.NoSuchTube):
        tube.put("late")


def test_replay_rebuilds_the_same_state(store, journal, clock, driver):
    tube = make(store, driver, **({"ttr": 5} if "ttl" in driver else {}))
    for i in range(4):
        tube.put(i, **({"utube": str(i % 2)} if driver.startswith("utube") else {}))
    a = tube.take(timeout=0)
    tube.release(a.id)
    b = tube.take(timeout=0)
    tube.bury(tube.tasks(state=READY)[0].id)
    clock.advance(6)
    store.tick()
    tube.kick(5)
    c = tube.take(timeout=0)
    tube.ack(c.id)
    assert b is not None
    rebuilt = replay(journal.ops(), clock)
    assert rebuilt.dump() == store.dump()
    # and from a snapshot of the rebuilt one
    assert Store.load(rebuilt.dump(), clock=clock).dump() == store.dump()


def test_wal_error_on_log_applies_nothing(store, journal, driver):
    tube = make(store, driver)
    t = tube.put("x")
    before = store.dump()
    journal.fail_next = errors.QueueError("disk full")
    with pytest.raises(errors.QueueError):
        tube.take(timeout=0)
    assert store.dump() == before
    journal.fail_next = errors.QueueError("disk full")
    with pytest.raises(errors.QueueError):
        tube.put("y")
    assert store.dump() == before
    assert tube.take(timeout=0).id == t.id


def _same_script(store, clock, driver):
    """Operations that go through the fast paths (default put, take(0), ack) and around them;
    returns what a caller sees."""
    events = []
    opts = {"ttl": 50, "ttr": 5} if "ttl" in driver else {}
    tube = store.create_tube("t", driver, on_task_change=lambda t, e: events.append((t.id, e)), **opts)
    keyed = driver.startswith("utube")
    seen = []
    for i in range(6):
        data = b"b%d" % i if i % 2 else f"s{i}"
        task = tube.put(data, **({"utube": str(i % 3)} if keyed and i % 2 else {}))
        seen.append((task.id, task.state, task.data, task.utube, task.ttl, task.expires_at))
        clock.advance(0.25)
    tube.put("non-ascii é")  # the validated path, in the same tube
    for _ in range(3):
        task = tube.take(timeout=0)
        seen.append((task.id, task.state, task.session, task.taken_at, task.ttr_at, task.attempts))
    tube.ack(seen[-1][0])
    tube.release(seen[-2][0])
    clock.advance(6)
    store.tick()
    task = tube.take(timeout=0)
    tube.ack(task.id)
    seen.append((task.id, task.state, task.session))
    return seen, events, store.dump(), store.statistics()


def test_null_journal_fast_path_equals_the_journaled_path(driver):
    # Without a journal put/take/ack skip building op records and call the transitions
    # directly; with one they log the op first. Both must leave the same store behind.
    clock_a, clock_b = FakeClock(), FakeClock()
    journal = RecordingJournal()
    plain = _same_script(Store(clock=clock_a), clock_a, driver)
    logged_store = Store(clock=clock_b, journal=journal)
    logged = _same_script(logged_store, clock_b, driver)
    assert plain == logged
    assert {op["op"] for op in journal.ops()} >= {"put", "take", "ack"}
    assert replay(journal.ops(), clock_b).dump() == plain[2]
