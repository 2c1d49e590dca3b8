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
from queues.errors import Draining, InvalidOption, NoSuchTask, NoSuchTube, NotOwner, Unsupported, WrongState
from queues.states import BURIED, DELAYED, DONE, READY, TAKEN

CALLS = ("put", "take", "ack", "release", "bury", "kick", "delete", "touch",
         "ttr_expired", "ttl_expired", "delay", "dead_letter")


def _buried_valid(entry):
    task = entry[-1]
    return task._entry is entry and task.state == BURIED


class Tube:
    def __init__(self, store, name, driver_cls, options):
        self.store = store
        self.name = name
        self.driver_name = driver_cls.name
        self.options = dict(options)          # persisted (msgpack-able)
        self.driver = driver_cls({k: v for k, v in options.items() if k in driver_cls.tube_options})
        self.put_options = driver_cls.put_options
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

    # -- put -------------------------------------------------------------------------------

    def put(self, data, pri=None, ttl=None, ttr=None, delay=None, utube=None, key=None, timeout=None):
        """Add a task; returns it. With ``key`` and a live task holding it, returns a copy of
        that task flagged ``existing`` instead. On a full tube (capacity) waits up to
        ``timeout`` seconds (default 0) for room, then raises TubeFull."""
        store = self.store
        if store.draining:
            raise Draining(f"the store is draining: put to tube {self.name!r} refused")
        if self._dropped:
            raise NoSuchTube(self.name)
        kind = type(data)
        if (pri is None and ttl is None and ttr is None and delay is None and utube is None
                and key is None and not self.driver.capacity and (kind is bytes or kind is str)
                and len(data) * 4 <= store.max_task_size):
            # The common case, kept lean: defaults only, data that needs no conversion.
            now = store._now()
            rec = {"op": "put", "tube": self.name, "id": store._next_id, "data": data,
                   "created_at": now}
            if self._def_fields is not None:
                rec.update(self._def_fields)
                ttl = self._def_ttl
                if ttl is not None:
                    rec["expires_at"] = now + ttl
        else:
            rec = self._prepare(data, pri, ttl, ttr, delay, utube, key)
            if key is not None:
                existing = self._existing(key)
                if existing is not None:
                    return existing
            if self.driver.capacity and len(self._tasks) >= self.driver.capacity:
                store._wait_space(self, 1, timeout)
                if key is not None:
                    existing = self._existing(key)
                    if existing is not None:
                        return existing
            rec = self._timed(rec, store.clock.monotonic())
            rec["op"] = "put"
            rec["tube"] = self.name
            rec["id"] = store._next_id
        token = store._log(rec)
        task = store._apply_put(rec)
        if task.state == READY and self._waiters:
            store._notify(self, 1)
        if self._hooks:
            self._fire(task, "put")
        if token is not None:
            store._journal_wait(token)
        return task

    def put_many(self, items, timeout=None):
        """Put several tasks in one op. ``items``: dicts with "data" and any put option.
        All are validated first: a bad item fails the whole batch and nothing is put.
        Returns the tasks in order (existing ones flagged, as put does)."""
        store = self.store
        if store.draining:
            raise Draining(f"the store is draining: put to tube {self.name!r} refused")
        if self._dropped:
            raise NoSuchTube(self.name)
        if not isinstance(items, (list, tuple)):
            raise InvalidOption("put_many takes a list of items", "items")
        recs = []
        for item in items:
            if not isinstance(item, dict) or "data" not in item:
                raise InvalidOption("each put_many item is a dict with a 'data' key", "items")
            extra = set(item) - {"data", "pri", "ttl", "ttr", "delay", "utube", "key"}
            if extra:
                raise InvalidOption(f"unknown option {sorted(extra)[0]!r} in put_many item", sorted(extra)[0])
            recs.append(self._prepare(item["data"], item.get("pri"), item.get("ttl"), item.get("ttr"),
                                      item.get("delay"), item.get("utube"), item.get("key")))
        results = [None] * len(recs)
        fresh, first, dup_of = [], {}, {}
        for i, rec in enumerate(recs):
            key = rec["key"]
            if key is not None:
                if key in first:
                    dup_of[i] = first[key]
                    continue
                existing = self._existing(key)
                if existing is not None:
                    results[i] = existing
                    continue
                first[key] = i
            fresh.append(i)
        cap = self.driver.capacity
        if fresh and cap and len(self._tasks) + len(fresh) > cap:
            store._wait_space(self, len(fresh), timeout)
        now = store.clock.monotonic()
        batch = []
        next_id = store._next_id
        for i in fresh:
            rec = self._timed(recs[i], now)
            rec["id"] = next_id
            next_id += 1
            batch.append(rec)
        tasks = []
        token = None
        if batch:
            token = store._log({"op": "put_many", "tube": self.name, "tasks": batch})
            tasks = store._apply_put_many({"tube": self.name, "tasks": batch})
        for i, task in zip(fresh, tasks):
            results[i] = task
        for i, j in dup_of.items():
            twin = results[j].copy()
            twin.existing = True
            results[i] = twin
        ready = sum(1 for t in tasks if t.state == READY)
        if ready and self._waiters:
            store._notify(self, ready)
        if self._hooks:
            for task in tasks:
                self._fire(task, "put")
        if token is not None:
            store._journal_wait(token)
        return results

    def _existing(self, key):
        tid = self.keys.get(key)
        if tid is None:
            return None
        twin = self._tasks[tid].copy()
        twin.existing = True
        return twin

    def _prepare(self, data, pri, ttl, ttr, delay, utube, key):
        """Validate one put's arguments into a record (no clock read yet)."""
        allowed = self.put_options
        if pri is None:
            pri = self._def_pri
        elif "pri" in allowed:
            pri = opt.priority("pri", pri)
        else:
            raise self._unsupported("pri")
        if ttl is None:
            ttl = self._def_ttl
        elif "ttl" in allowed:
            ttl = opt.duration("ttl", ttl)
        else:
            raise self._unsupported("ttl")
        if ttr is None:
            ttr = self._def_ttr
        elif "ttr" in allowed:
            ttr = opt.duration("ttr", ttr)
        else:
            raise self._unsupported("ttr")
        if delay is not None:
            if "delay" not in allowed:
                raise self._unsupported("delay")
            delay = opt.duration("delay", delay)
            if delay == 0:
                delay = None
        if utube is not None:
            if "utube" not in allowed:
                raise self._unsupported("utube")
            utube = opt.utube("utube", utube)
        elif "utube" in allowed:
            utube = ""
        if key is not None:
            key = opt.unique_key("key", key)
        data = opt.data(data, self.store.max_task_size)
        return {"data": data, "pri": pri, "ttl": ttl, "ttr": ttr, "delay": delay,
                "utube": utube, "key": key}

    @staticmethod
    def _timed(rec, now):
        delay = rec["delay"]
        ttl = rec["ttl"]
        if delay is None:
            ready_at = None
            start = now
        else:
            ready_at = start = now + delay
        rec["created_at"] = now
        rec["ready_at"] = ready_at
        rec["expires_at"] = None if ttl is None else start + ttl
        return rec

    def _unsupported(self, option):
        return InvalidOption(f"tube {self.name!r} ({self.driver_name}) does not take option {option!r}", option)

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
                if now < store._wake_at:
                    # store._take_one, written out: this is the hottest path there is
                    ttr = task.ttr
                    op = {"op": "take", "tube": self.name, "id": task.id, "session": session,
                          "taken_at": now, "ttr_at": None if ttr is None else now + ttr}
                    token = store._log(op)
                    store._apply_take(op)
                    if self._hooks:
                        self._fire(task, "take")
                    if token is not None:
                        store._journal_wait(token)
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
        op = {"op": "ack", "tube": self.name, "id": task.id}
        token = store._log(op)
        store._apply_ack(op)
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
