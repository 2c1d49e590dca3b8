"""Store: the in-memory queue database (tubes of tasks), its commit path and its ticker.

    store = Store(clock=SystemClock())             # journal=None: nothing is logged
    tube = store.create_tube("jobs", "fifottl", ttr=30)
    tube.put({"x": 1}, pri=0, delay=5)
    task = tube.take(timeout=1.0)
    tube.ack(task.id)
    store.start()                                  # the ticker fiber drives delay/ttr/ttl

Every change is one op (queues.ops documents the kinds) that goes
decide -> journal.log(op) -> apply(op) -> notify -> journal.wait(token). ``journal.log`` may
raise (a QueueError such as WalError): the op is then not applied and the caller gets the
error. ``journal.wait(token)`` is called only when log returned a token other than None.
A journal attached with ``op_records`` (one that declares ``encoded_ops``) gets the common
put, take and ack as bytes, the msgpack encoding of the op dict (see attach_journal).
"""
import logging
import time as _time

from queues import options as opt
from queues.drivers.registry import Registry
from queues.errors import NoSuchTube, TubeBusy, TubeExists
from queues.ops import INF, ApplyMixin
from queues.sessions import Sessions
from queues.snapshot import SnapshotMixin
from queues.states import READY, TAKEN
from queues.ticker import Ticker
from queues.tube import Tube
from queues.waiting import WaitingMixin


class NullJournal:
    """Logs nothing; costs one call per op."""

    def log(self, op):
        return None

    def wait(self, token):
        return None


class Store(ApplyMixin, WaitingMixin, SnapshotMixin):
    def __init__(self, clock=None, journal=None, max_task_size=1 << 20, drivers=None, log=None):
        if clock is None:
            from fiberapp.runtime.clock import SystemClock

            clock = SystemClock()
        self.clock = clock
        # The hot paths read the clock through _now; for the system clock, skip its method.
        monotonic = clock.monotonic
        if getattr(monotonic, "__func__", None) is getattr(type(clock), "monotonic", None) and \
                type(clock).__name__ == "SystemClock" and type(clock).__module__ == "fiberapp.runtime.clock":
            monotonic = _time.monotonic
        self._now = monotonic
        self._tubes = {}
        self.attach_journal(journal)
        self.max_task_size = opt.count("max_task_size", max_task_size, minimum=1, allow_none=False)
        self.drivers = drivers if drivers is not None else Registry()
        self.log = log or logging.getLogger("queues.store")
        self.sessions = Sessions(self)
        self.draining = False
        self._next_id = 1
        self._wake_at = INF          # earliest deadline any driver may have scheduled
        self._ticker = None
        self._pending_tokens = []
        self._appliers = self._build_appliers()

    def attach_journal(self, journal, op_records=None):
        """Use ``journal`` from now on (recovery replays with none, then attaches the WAL).

        ``op_records``: for a journal whose log() also takes encoded ops (bytes), a factory
        ``op_records(tube_name)`` of objects with put/take/ack methods returning the op's
        encoding (queues.persist.record.OpRecords); each tube keeps one and its hot paths
        log those bytes instead of building the op dict for the journal to pack."""
        self.journal = journal if journal is not None else NullJournal()
        self._op_records = op_records
        for tube in self._tubes.values():
            tube._records = None if op_records is None else op_records(tube.name)
        self._log = self.journal.log
        self._journal_wait = self.journal.wait  # bound once: no frame of ours per operation
        # With the null journal nobody reads the op records, so the hot paths (put, take,
        # ack) skip building them and call the transition (_put_task, _take_task, _ack_task)
        # that apply() would call with the same decisions: ~a quarter of a cycle's cost.
        self._journaled = type(self.journal) is not NullJournal

    # -- tubes -----------------------------------------------------------------------------

    def create_tube(self, name, driver="fifo", if_not_exists=False, **options):
        """Create a tube. Options: max_attempts, dead_letter (a tube name), on_task_change
        (a callable, not persisted), and the driver's own (pri/ttl/ttr defaults, capacity)."""
        opt.name(name)
        hook = options.pop("on_task_change", None)
        existing = self._tubes.get(name)
        if existing is not None:
            if if_not_exists and existing.driver_name == driver:
                if hook is not None:
                    existing.on_task_change(hook)
                return existing
            raise TubeExists(name)
        cls = self.drivers.get(driver)
        schema = dict(opt.common_tube_options(), **cls.tube_options)
        checked = opt.check_options(schema, options, f"a {driver} tube")
        token = self._log({"op": "create_tube", "tube": name, "driver": driver, "options": checked})
        self._apply_create_tube({"tube": name, "driver": driver, "options": checked})
        tube = self._tubes[name]
        if hook is not None:
            tube.on_task_change(hook)
        if token is not None:
            self._journal_wait(token)
        return tube

    def _make_tube(self, name, driver, options):
        return Tube(self, name, self.drivers.get(driver), options)

    def tube(self, name):
        tube = self._tubes.get(name)
        if tube is None:
            raise NoSuchTube(name)
        return tube

    def tubes(self):
        return sorted(self._tubes)

    def drop_tube(self, name):
        """Drop a tube and its tasks; refused (TubeBusy) while consumers wait on it or any of
        its tasks is taken."""
        tube = self.tube(name)
        if any(not w.done for w in tube._waiters) or tube._promised:
            raise TubeBusy(f"tube {name!r} has waiting consumers")
        if tube.counts[TAKEN]:
            raise TubeBusy(f"tube {name!r} has {tube.counts[TAKEN]} taken tasks")
        self._commit(tube, {"op": "drop_tube", "tube": name})
        self._space_freed(tube, len(tube._space_waiters))

    def statistics(self):
        """{tube name: tube.statistics()} for every tube."""
        return {name: self._tubes[name].statistics() for name in sorted(self._tubes)}

    def drain(self, on=True):
        """Drain mode: puts are refused with Draining, takes are served. In memory only."""
        self.draining = bool(on)

    def take_any(self, tube_names, timeout=None, session=None):
        """Take from whichever of the tubes has a task first (list order when several do)."""
        if isinstance(tube_names, str) or not tube_names:
            raise opt.InvalidOption("take_any takes a non-empty list of tube names", "tubes")
        tubes = tuple(self.tube(name) for name in tube_names)
        if session is None:
            session = self.sessions.current()
        got = self._take_slow(tubes, timeout, session, 1)
        return got[0] if got else None

    # -- the commit path ---------------------------------------------------------------------

    def _commit(self, tube, op):
        """Log, apply, notify and wait for one op; returns what apply returned."""
        token = self._log(op)
        result = self.apply(op)
        self._after(tube, op["op"], result)
        if token is not None:
            self._journal_wait(token)
        return result

    def _after(self, tube, kind, result):
        """Hooks and wake-ups for the changes an op made."""
        if isinstance(result, list):
            for item in result:
                if isinstance(item, tuple):
                    self._notify_change(*item)
                else:
                    self._notify_change(tube, item, kind)
        elif result is not None:
            self._notify_change(tube, result, kind)

    def _notify_change(self, tube, task, event):
        if task is None:  # tube-level change (pause, truncate, drop)
            if event == "pause" and tube._waiters and not tube.paused():
                self._notify(tube, len(tube._waiters))
            elif event in ("truncate", "drop"):
                self._space_freed(tube, len(tube._space_waiters))
                if event == "drop":
                    self._notify(tube, len(tube._waiters))
            return
        state = task.state
        if tube._waiters and (state == READY or event in ("ack", "delete", "bury", "ttl", "dead_letter")):
            if tube.driver.candidate() is not None:
                self._notify(tube, 1)
        if tube._space_waiters and task.state == "done":
            self._space_freed(tube)
        if tube._hooks:
            tube._fire(task, event)

    def _take_one(self, tube, task, session, now, wait=True):
        op = {"op": "take", "tube": tube.name, "id": task.id, "taken_at": now, "session": session}
        ttr = task.ttr
        if ttr is not None:  # None is left out (see queues.ops)
            op["ttr_at"] = now + ttr
        token = self._log(op)
        self._apply_take(op)
        if tube._hooks:
            tube._fire(task, "take")
        if token is not None:
            if wait:
                self._journal_wait(token)
            else:
                self._pending_tokens.append(token)
        return task

    def _requeue(self, tube, task, now, delay=0.0, event="release"):
        """Decide where a task that comes back from a consumer goes; returns a move dict."""
        move = {"tube": tube.name, "id": task.id, "event": event, "to": "ready"}
        max_attempts = tube.options.get("max_attempts")
        if task.expires_at is not None and task.expires_at <= now:
            move["to"] = "done"
        elif max_attempts is not None and task.attempts >= max_attempts:
            target = self._tubes.get(tube.options.get("dead_letter"))
            if target is not None and target is not tube and not (
                    target.driver.capacity and len(target._tasks) >= target.driver.capacity):
                ttl = target.options.get("ttl")
                move.update(to="dead", dead_tube=target.name, expires_at=None if ttl is None else now + ttl)
            else:
                move["to"] = "buried"
        elif delay:
            move.update(to="delayed", ready_at=now + delay,
                        expires_at=None if task.expires_at is None else task.expires_at + delay)
        return move

    # -- deadlines -------------------------------------------------------------------------

    def _schedule(self, at):
        self._wake_at = at
        if self._ticker is not None:
            self._ticker.wake()

    def tick(self, now=None):
        """Apply every deadline that lapsed by ``now``; returns the next deadline (monotonic)
        or None. One ``tick`` op per round; a round can make more fall due at the same
        ``now`` (a delayed task that became ready with its ttl already past), so it repeats
        until none is left. The ticker fiber calls this; tests may too."""
        if now is None:
            now = self.clock.monotonic()
        while self._tick_round(now):
            pass
        return None if self._wake_at == INF else self._wake_at

    def _tick_round(self, now):
        moves, seen, due = [], set(), []
        for tube in self._tubes.values():
            for task, event in tube.driver.due(now):
                if task.id in seen:
                    continue
                seen.add(task.id)
                due.append((tube, task))
                if event == "delay":
                    moves.append({"tube": tube.name, "id": task.id, "event": "delay", "to": "ready"})
                elif event == "ttr":
                    moves.append(self._requeue(tube, task, now, event="ttr"))
                else:
                    moves.append({"tube": tube.name, "id": task.id, "event": "ttl", "to": "done"})
        if not moves:
            self._wake_at = self._next_deadline()
            return False
        op = {"op": "tick", "moves": moves}
        try:
            token = self._log(op)
        except BaseException:
            for tube, task in due:  # not applied: put them back in the schedule
                tube.driver.changed(task, task.state)
            self._wake_at = self._next_deadline()
            raise
        result = self.apply(op)
        self._wake_at = self._next_deadline()
        self._after(None, "tick", result)
        if token is not None:
            self._journal_wait(token)
        return True

    def _next_deadline(self):
        best = INF
        for tube in self._tubes.values():
            at = tube.driver.next_deadline()
            if at is not None and at < best:
                best = at
        return best

    # -- sessions --------------------------------------------------------------------------

    def _end_session(self, name):
        tasks = sorted(self.sessions._tasks_of(name), key=lambda t: t.id)
        if not tasks:
            self.sessions._taken.pop(name, None)
            return 0
        now = self.clock.monotonic()
        moves = [self._requeue(self._tubes[t.tube], t, now, event="session") for t in tasks]
        self._commit(None, {"op": "end_session", "session": name, "moves": moves})
        if not self.sessions._taken.get(name):
            self.sessions._taken.pop(name, None)
        return len(moves)

    def _end_session_later(self, name):
        if self._ticker is not None:
            self._ticker.end_session(name)
        else:
            import gevent

            gevent.spawn(self._end_session, name)

    def release_orphans(self):
        """Every TAKEN task back to READY (attempt counted): recovery calls this at its end,
        when no consumer of before the restart is left. Returns how many."""
        now = self.clock.monotonic()
        moves = []
        for tube in self._tubes.values():
            for task in tube._tasks.values():
                if task.state == TAKEN:
                    moves.append(self._requeue(tube, task, now, event="orphan"))
        if moves:
            self._commit(None, {"op": "release_orphans", "moves": moves})
        return len(moves)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, runtime=None):
        """Start the ticker fiber (via runtime.spawn when given, else gevent)."""
        if self._ticker is None:
            self._ticker = Ticker(self, runtime)
            self._ticker.start()
        return self

    def stop(self):
        if self._ticker is not None:
            ticker, self._ticker = self._ticker, None
            ticker.stop()

    @property
    def running(self):
        return self._ticker is not None
