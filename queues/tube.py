"""Tube: the live API of one queue. Each method decides (reading the clock at most once),
builds one op, and hands it to the store's commit path:

    decide -> op -> journal.log(op) -> apply(op) -> hooks / wake waiters -> journal.wait(token)

Nothing between deciding and applying yields to the hub, so every operation is atomic
without locks. Ownership: ack, release and touch need the task's session (the caller's own
by default, or ``session=``); bury and delete are allowed to anyone.
"""
import heapq
from collections import deque

from greenlet import getcurrent

from queues import options as opt
from queues.drivers.base import LazyHeap
from queues.putting import PutMixin
from queues.errors import InvalidOption, NoSuchTask, NoSuchTube, NotOwner, Unsupported, WrongState
from queues.states import BURIED, DELAYED, DONE, READY, TAKEN

CALLS = ("put", "take", "ack", "release", "bury", "kick", "delete", "touch",
         "ttr_expired", "ttl_expired", "delay", "dead_letter")


def _buried_valid(entry):
    task = entry[-1]
    return task._entry is entry and task.state == BURIED


class Tube(PutMixin):
    def __init__(self, store, name, driver_cls, options):
        self.store = store
        self.name = name
        self.driver_name = driver_cls.name
        self.options = dict(options)          # persisted (msgpack-able)
        self.driver = driver_cls({k: v for k, v in options.items() if k in driver_cls.tube_options})
        self.put_options = driver_cls.put_options
        self._changed_on_ack = getattr(self.driver, "changed_on_ack", self.driver.changed)
        self._tasks = {}                       # id -> Task (live tasks of this tube)
        self.keys = {}                        # unique key -> task id
        self.buried = LazyHeap(_buried_valid)  # (pri, id, task): kick order
        self.counts = {READY: 0, TAKEN: 0, DELAYED: 0, BURIED: 0, DONE: 0}
        self.done = 0
        self.calls = dict.fromkeys(CALLS, 0)
        self.resume_at = None
        self.hook_errors = 0
        self._hooks = []
        self._waiters = deque()               # takers (queues.waiting)
        self._promised = 0                    # takers woken for a task, not yet run
        self._space_waiters = deque()         # puts waiting for capacity
        self._dropped = False
        self._def_pri = options.get("pri", 0)
        self._def_ttl = options.get("ttl")
        self._def_ttr = options.get("ttr")
        self._def_utube = "" if "utube" in driver_cls.put_options else None
        # Non-default put fields of a put with no options (None: nothing to add to the op).
        defaults = {k: v for k, v in (("pri", self._def_pri), ("ttl", self._def_ttl),
                                      ("ttr", self._def_ttr), ("utube", self._def_utube))
                    if v is not None and not (k == "pri" and v == 0)}
        self._def_fields = defaults or None
        # The encoder of this tube's hot ops when the journal takes them encoded (see
        # Store.attach_journal), else None.
        self._records = None if store._op_records is None else store._op_records(name)

    def __repr__(self):
        return f"<Tube {self.name} {self.driver_name}>"

    def _index_buried(self, task):
        entry = (task.pri, task.id, task)
        task._entry = entry
        self.buried.push(entry)

    def _task(self, task_id, operation):
        if self._dropped:
            raise NoSuchTube(self.name)
        task = self._tasks.get(task_id)
        if task is None:
            if isinstance(task_id, bool) or not isinstance(task_id, int):
                raise InvalidOption(f"task id must be an integer, not {type(task_id).__name__}", "id")
            raise NoSuchTask(task_id, self.name)
        return task

    def _owned(self, task_id, operation, session):
        task = self._task(task_id, operation)
        if task.state != TAKEN:
            raise WrongState(operation, task_id, task.state)
        if session is None:
            session = self.store.sessions.peek_current()
        if task.session != session:
            raise NotOwner(operation, task_id, session, task.session)
        return task

    # -- take ------------------------------------------------------------------------------

    def take(self, timeout=None, session=None):
        """Take the next task: waits up to ``timeout`` seconds (None = forever, 0 = do not
        wait) and returns None when it passes. Waiters are served in arrival order."""
        store = self.store
        if session is None:
            session = store.sessions._by_fiber.get(getcurrent()) or store.sessions.current()
        if not self._promised and self.resume_at is None:
            task = self.driver.candidate()
            if task is not None:
                now = store._now()
                # Python 3.11 specialises a comparison (float, int, str) only when the jump
                # after it is short: a long body under "if now < store._wake_at" left this
                # one generic (+150 instructions per take). So the short branch comes first.
                if now >= store._wake_at:
                    task = None  # a deadline fell due: the slow path runs the tick first
                else:
                    # store._take_one, written out: this is the hottest path there is
                    ttr = task.ttr
                    ttr_at = None if ttr is None else now + ttr
                    if store._journaled:
                        records = self._records
                        if records is not None and ttr_at is None:
                            token = store._log(records.take(task.id, session, now))
                        else:
                            op = {"op": "take", "tube": self.name, "id": task.id,  # as OpRecords.take
                                  "taken_at": now, "session": session}
                            if ttr_at is not None:  # None is left out (see queues.ops)
                                op["ttr_at"] = ttr_at
                            token = store._log(op)
                        store._take_task(self, task, session, now, ttr_at)
                        if self._hooks:
                            self._fire(task, "take")
                        if token is not None:
                            store._journal_wait(token)
                        return task
                    store._take_task(self, task, session, now, ttr_at)
                    if self._hooks:
                        self._fire(task, "take")
                    return task
        got = store._take_slow((self,), timeout, session, 1)
        return got[0] if got else None

    def take_many(self, n, timeout=None, session=None):
        """Take up to n tasks: waits (up to timeout) for the first, then takes whatever else
        is ready at once. Returns a list (empty when the timeout passes)."""
        n = opt.count("n", n, minimum=1, allow_none=False)
        store = self.store
        if session is None:
            session = store.sessions.current()
        return store._take_slow((self,), timeout, session, n)

    # -- operations on one task ------------------------------------------------------------

    def ack(self, task_id, session=None):
        task = self._tasks.get(task_id)
        if task is None or task.state != TAKEN or type(task_id) is not int:
            task = self._owned(task_id, "ack", session)
        store = self.store
        if session is None:
            session = store.sessions._by_fiber.get(getcurrent())
        if task.session != session:
            raise NotOwner("ack", task.id, session, task.session)
        if store._journaled:
            records = self._records
            token = store._log({"op": "ack", "tube": self.name, "id": task.id} if records is None
                               else records.ack(task.id))
        else:
            token = None
        store._ack_task(self, task)
        if self._waiters or self._space_waiters or self._hooks:
            store._notify_change(self, task, "ack")
        if token is not None:
            store._journal_wait(token)
        return task

    def release(self, task_id, delay=0, pri=None, session=None):
        """Give a taken task back: ready now, or delayed by ``delay`` seconds, optionally with a
        new priority. Past max_attempts it is buried or dead-lettered instead; if its ttl passed
        while it was taken, it expires now."""
        task = self._owned(task_id, "release", session)
        delay = opt.duration("delay", delay, allow_none=False) or 0.0
        if delay and "delay" not in self.put_options:
            raise Unsupported(f"tube {self.name!r} ({self.driver_name}) cannot release with a delay")
        if pri is not None:
            if "pri" not in self.put_options:
                raise Unsupported(f"tube {self.name!r} ({self.driver_name}) has no priorities")
            pri = opt.priority("pri", pri)
        store = self.store
        move = store._requeue(self, task, store.clock.monotonic(), delay)
        move.update(op="release", pri=pri)
        # apply returns (tube, task, event) notifications; the last is the task where it
        # ended (a dead-lettered task's new record in the dead-letter tube)
        return store._commit(self, move)[-1][1]

    def touch(self, task_id, delta, session=None):
        """Extend the running ttr of a task the caller has taken by ``delta`` seconds."""
        if "ttr" not in self.put_options:
            raise Unsupported(f"tube {self.name!r} ({self.driver_name}) has no ttr to touch")
        delta = opt.duration("delta", delta, allow_none=False)
        task = self._owned(task_id, "touch", session)
        ttr_at = None if task.ttr_at is None or delta is None else task.ttr_at + delta
        return self.store._commit(self, {"op": "touch", "tube": self.name, "id": task.id, "ttr_at": ttr_at})

    def bury(self, task_id):
        task = self._task(task_id, "bury")
        if task.state not in (READY, TAKEN, DELAYED):
            raise WrongState("bury", task_id, task.state)
        return self.store._commit(self, {"op": "bury", "tube": self.name, "id": task.id})

    def delete(self, task_id):
        task = self._task(task_id, "delete")
        return self.store._commit(self, {"op": "delete", "tube": self.name, "id": task.id})

    def kick_task(self, task_id):
        """Move one BURIED or DELAYED task to READY."""
        task = self._task(task_id, "kick_task")
        if task.state == DELAYED:
            expires_at = None if task.ttl is None else self.store.clock.monotonic() + task.ttl
        elif task.state == BURIED:
            expires_at = task.expires_at
        else:
            raise WrongState("kick_task", task_id, task.state)
        return self.store._commit(self, {"op": "kick_task", "tube": self.name, "id": task.id,
                                         "expires_at": expires_at})

    def kick(self, n=1):
        """Move up to n BURIED tasks (lowest pri, then id) to READY; returns how many."""
        n = opt.count("n", n, minimum=0, allow_none=False)
        if self._dropped:
            raise NoSuchTube(self.name)
        # Pop the first n valid entries to learn their ids, then put them back: the op's
        # apply re-indexes the tasks, and if logging fails nothing must be lost.
        heap = self.buried
        popped = []
        while len(popped) < n:
            entry = heap.top()
            if entry is None:
                break
            popped.append(heapq.heappop(heap.heap))
        for entry in popped:
            heapq.heappush(heap.heap, entry)
        ids = [entry[1] for entry in popped]
        if not ids:
            return 0
        self.store._commit(self, {"op": "kick", "tube": self.name, "ids": ids})
        return len(ids)

    def peek(self, task_id):
        return self._task(task_id, "peek")

    def tasks(self, state=None, limit=1000):
        """Live tasks (in insertion order), optionally of one state, at most ``limit``."""
        if state is not None and state not in (READY, TAKEN, DELAYED, BURIED):
            raise InvalidOption(f"unknown state {state!r}", "state")
        limit = opt.count("limit", limit, minimum=0, allow_none=True)
        out = []
        for task in self._tasks.values():
            if state is None or task.state == state:
                if limit is not None and len(out) >= limit:
                    break
                out.append(task)
        return out

    def truncate(self):
        """Delete every task of the tube (counted as done)."""
        if self._dropped:
            raise NoSuchTube(self.name)
        return self.store._commit(self, {"op": "truncate", "tube": self.name})

    def pause(self, seconds):
        """No takes for ``seconds`` (takes wait, puts are accepted); 0 resumes now."""
        if self._dropped:
            raise NoSuchTube(self.name)
        seconds = opt.duration("seconds", seconds)
        store = self.store
        resume_at = None if seconds == 0 else (float("inf") if seconds is None else store.clock.monotonic() + seconds)
        store._commit(self, {"op": "pause", "tube": self.name, "resume_at": resume_at})

    def paused(self, now=None):
        if self.resume_at is None:
            return False
        return (self.store.clock.monotonic() if now is None else now) < self.resume_at

    # -- hooks and statistics --------------------------------------------------------------

    def on_task_change(self, callback):
        """Call ``callback(task, event)`` after every change of a task of this tube (event:
        put, take, ack, delete, release, bury, kick, touch, ttr, ttl, delay, dead_letter,
        session, orphan). Hooks run after the change, outside the atomic section; an
        exception in one is logged and counted (hook_errors), never propagated. Returns a
        function that removes the hook. Hooks are not persisted."""
        if not callable(callback):
            raise InvalidOption("on_task_change takes a callable", "on_task_change")
        self._hooks.append(callback)
        return lambda: self._hooks.remove(callback) if callback in self._hooks else None

    def _fire(self, task, event):
        for hook in list(self._hooks):
            try:
                hook(task, event)
            except Exception:
                self.hook_errors += 1
                self.store.log.exception("on_task_change hook of tube %r failed", self.name)

    def statistics(self):
        c = self.counts
        live = c[READY] + c[TAKEN] + c[DELAYED] + c[BURIED]
        return {
            "tasks": {"ready": c[READY], "taken": c[TAKEN], "delayed": c[DELAYED],
                      "buried": c[BURIED], "done": self.done, "total": live},
            "calls": dict(self.calls),
            "driver": self.driver_name,
            "paused": self.paused(),
            "waiting": sum(1 for w in self._waiters if not w.done),
        }
