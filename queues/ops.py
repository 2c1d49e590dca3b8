"""Operation records and the one place they are applied: ``Store.apply(op)``.

Every change to the store is one op: a dict of msgpack-able values (str, int, float, bytes,
None, list, dict) carrying the *decisions* taken live (the id assigned, the deadlines
computed, which task a take got, which tasks a tick moved, where a requeued task went).
apply() never reads the clock and never chooses, so replaying a WAL through it rebuilds
exactly the state the live store had.

Times: every key ending in ``_at``, at any depth (also inside the dicts of a list), is a
monotonic time in seconds or None; nothing else is a time. The journal converts them
generically (wall = mono + clock.time() - clock.monotonic()).

Op kinds (``op["op"]``), fields beside "op":

    create_tube   tube, driver, options (validated, msgpack-able; hooks are not persisted)
    drop_tube     tube
    put           tube, id, data, created_at, and when not the default: pri (0), ttl, ttr,
                  delay, utube, key, ready_at (set when delayed), expires_at (None = never);
                  a missing optional key means its default (None unless said otherwise)
    put_many      tube, tasks: [put fields without "op"/"tube"]
    take          tube, id, session, taken_at, and ttr_at when the task has a ttr (missing
                  = None; records written before this rule carry ttr_at: None)
    ack           tube, id
    delete        tube, id
    bury          tube, id
    kick          tube, ids                       (BURIED -> READY, in that order)
    kick_task     tube, id, expires_at            (BURIED | DELAYED -> READY)
    touch         tube, id, ttr_at                (the new ttr deadline)
    release       tube, id, pri (None = keep) + a move's fields (to, ready_at, expires_at,
                  dead_tube)
    truncate      tube
    pause         tube, resume_at                 (None = not paused)
    tick          moves                           (deadlines that lapsed)
    end_session   session, moves                  (tasks of a session that ended)
    release_orphans moves                         (taken tasks at the end of recovery)

A move is a dict: tube, id, event ("delay" | "ttr" | "ttl" | "release" | "session" |
"orphan"), to ("ready" | "delayed" | "buried" | "dead" | "done"), and when needed ready_at,
expires_at (the new ttl deadline), dead_tube (for to == "dead": the dead-letter tube the task
moves to, keeping its id; its earlier counters go to ``history``).

apply() returns a list of (tube, task, event) notifications for the live caller (hooks,
waking waiters); replay ignores it.
"""
from queues.errors import ReplayError
from queues.states import BURIED, DELAYED, DONE, READY, TAKEN
from queues.task import Task

INF = float("inf")


class ApplyMixin:
    """State changes of Store; every method here is called only from apply() (or replay)."""

    def apply(self, op):
        try:
            fn = self._appliers[op["op"]]
        except KeyError:
            raise ReplayError(f"unknown operation kind {op.get('op')!r}") from None
        try:
            return fn(op)
        except (KeyError, AttributeError) as exc:
            raise ReplayError(f"operation {op!r} does not fit the store: {exc!r}") from None

    def _build_appliers(self):
        return {
            "create_tube": self._apply_create_tube,
            "drop_tube": self._apply_drop_tube,
            "put": self._apply_put,
            "put_many": self._apply_put_many,
            "take": self._apply_take,
            "ack": self._apply_ack,
            "delete": self._apply_delete,
            "bury": self._apply_bury,
            "kick": self._apply_kick,
            "kick_task": self._apply_kick_task,
            "touch": self._apply_touch,
            "release": self._apply_release,
            "truncate": self._apply_truncate,
            "pause": self._apply_pause,
            "tick": self._apply_moves,
            "end_session": self._apply_moves,
            "release_orphans": self._apply_moves,
        }

    # -- the primitive transitions -------------------------------------------------------

    def _move(self, tube, task, new):
        old = task.state
        counts = tube.counts
        counts[old] -= 1
        counts[new] += 1
        task.state = new
        if old == TAKEN and new != TAKEN:
            self.sessions._untake(task)
        if new == BURIED:
            tube._index_buried(task)
        elif old == BURIED:
            tube.buried.dead()
        at = tube.driver.changed(task, old)
        if at is not None and at < self._wake_at:
            self._schedule(at)

    def _remove(self, tube, task):
        old = task.state
        tube.counts[old] -= 1
        tube.done += 1
        task.state = DONE
        del tube._tasks[task.id]
        key = task.key
        if key is not None and tube.keys.get(key) == task.id:
            del tube.keys[key]
        if old == TAKEN:
            mine = self.sessions._taken.get(task.session)
            if mine is not None:
                mine.pop(task.id, None)
            task.session = None
        elif old == BURIED:
            tube.buried.dead()
        tube.driver.changed(task, old)
        task._entry = None  # task <-> index entry is a cycle: broken, the task dies by refcount

    def _insert(self, tube, task):
        tube._tasks[task.id] = task
        tube.counts[task.state] += 1
        if task.key is not None and task.key not in tube.keys:
            tube.keys[task.key] = task.id
        if task.state == TAKEN:
            self.sessions._take(task)
        elif task.state == BURIED:
            tube._index_buried(task)
        at = tube.driver.changed(task, None)
        if at is not None and at < self._wake_at:
            self._schedule(at)
        if task.id >= self._next_id:
            self._next_id = task.id + 1

    # -- tubes -----------------------------------------------------------------------------

    def _apply_create_tube(self, op):
        tube = self._make_tube(op["tube"], op["driver"], op["options"])
        self._tubes[tube.name] = tube
        return []

    def _apply_drop_tube(self, op):
        tube = self._tubes.pop(op["tube"])
        for task in list(tube._tasks.values()):
            if task.state == TAKEN:
                self.sessions._untake(task)
            task.state = DONE
            task._entry = None
        tube._dropped = True
        return [(tube, None, "drop")]

    def _apply_truncate(self, op):
        tube = self._tubes[op["tube"]]
        for task in tube._tasks.values():
            if task.state == TAKEN:
                self.sessions._untake(task)
            task.state = DONE
            task._entry = None
        tube.done += len(tube._tasks)
        tube._tasks = {}
        tube.keys = {}
        for state in tube.counts:
            tube.counts[state] = 0
        tube.buried.clear()
        tube.driver.clear()
        return [(tube, None, "truncate")]

    def _apply_pause(self, op):
        tube = self._tubes[op["tube"]]
        tube.resume_at = op["resume_at"]
        return [(tube, None, "pause")]

    # -- tasks -----------------------------------------------------------------------------

    def _apply_put(self, op):
        tube = self._tubes[op["tube"]]
        if len(op) == 5:  # every default (see _new_task), inlined for the hot path
            task = Task(op["id"], tube.name, READY, op["data"], 0, None, None, None, None, None,
                        op["created_at"], None, None, self.clock)
        else:
            task = self._new_task(tube, op)
        return self._put_task(tube, task)

    def _put_task(self, tube, task):
        """The put transition proper: the live path without a journal calls it directly
        (it has the decisions in hand and needs no op), replay through _apply_put."""
        tid = task.id
        tube.calls["put"] += 1
        tube._tasks[tid] = task
        tube.counts[task.state] += 1
        key = task.key
        if key is not None and key not in tube.keys:
            tube.keys[key] = tid
        at = tube.driver.changed(task, None)
        if at is not None and at < self._wake_at:
            self._schedule(at)
        if tid >= self._next_id:
            self._next_id = tid + 1
        return task

    def _new_task(self, tube, rec):
        if len(rec) == 5:  # op, tube, id, data, created_at: a put with every default
            return Task(rec["id"], tube.name, READY, rec["data"], 0, None, None, None, None, None,
                        rec["created_at"], None, None, self.clock)
        get = rec.get
        ready_at = get("ready_at")
        return Task(rec["id"], tube.name, READY if ready_at is None else DELAYED, rec["data"],
                    get("pri", 0), get("ttl"), get("ttr"), get("delay"), get("utube"), get("key"),
                    rec["created_at"], ready_at, get("expires_at"), self.clock)

    def _apply_put_many(self, op):
        tube = self._tubes[op["tube"]]
        out = []
        for rec in op["tasks"]:
            task = self._new_task(tube, rec)
            tube.calls["put"] += 1
            self._insert(tube, task)
            out.append(task)
        return out

    def _apply_take(self, op):
        tube = self._tubes[op["tube"]]
        task = tube._tasks[op["id"]]
        if task.state != READY:
            raise ReplayError(f"take of task {task.id} in state {task.state}")
        self._take_task(tube, task, op["session"], op["taken_at"], op.get("ttr_at"))
        return task

    def _take_task(self, tube, task, session, taken_at, ttr_at):
        """The take transition of a READY task (live without a journal, or via _apply_take)."""
        task.attempts += 1
        task.taken_at = taken_at
        task.ttr_at = ttr_at
        task.session = session
        tube.calls["take"] += 1
        counts = tube.counts
        counts[READY] -= 1
        counts[TAKEN] += 1
        task.state = TAKEN
        at = tube.driver.changed(task, READY)
        if at is not None and at < self._wake_at:
            self._schedule(at)
        taken = self.sessions._taken
        mine = taken.get(session)
        if mine is None:
            mine = taken[session] = {}
        mine[task.id] = task

    def _apply_ack(self, op):
        tube = self._tubes[op["tube"]]
        task = tube._tasks[op["id"]]
        if task.state != TAKEN:
            raise ReplayError(f"ack of task {task.id} in state {task.state}")
        self._ack_task(tube, task)
        return task

    def _ack_task(self, tube, task):
        """The ack transition of a TAKEN task: _remove written out for that case (ack is a
        third of every cycle). Live without a journal, or via _apply_ack."""
        tid = task.id
        del tube._tasks[tid]
        tube.calls["ack"] += 1
        tube.counts[TAKEN] -= 1
        tube.done += 1
        task.state = DONE
        key = task.key
        if key is not None and tube.keys.get(key) == tid:
            del tube.keys[key]
        mine = self.sessions._taken.get(task.session)
        if mine is not None:
            mine.pop(tid, None)
        task.session = None
        changed = tube._changed_on_ack
        if changed is not None:
            changed(task, TAKEN)
        task._entry = None  # as in _remove: no cycle left for the collector

    def _apply_delete(self, op):
        tube = self._tubes[op["tube"]]
        task = tube._tasks[op["id"]]
        tube.calls["delete"] += 1
        self._remove(tube, task)
        return task

    def _apply_bury(self, op):
        tube = self._tubes[op["tube"]]
        task = tube._tasks[op["id"]]
        task.buries += 1
        tube.calls["bury"] += 1
        self._move(tube, task, BURIED)
        return task

    def _apply_kick(self, op):
        tube = self._tubes[op["tube"]]
        out = []
        for tid in op["ids"]:
            task = tube._tasks[tid]
            task.kicks += 1
            tube.calls["kick"] += 1
            self._move(tube, task, READY)
            out.append(task)
        return out

    def _apply_kick_task(self, op):
        tube = self._tubes[op["tube"]]
        task = tube._tasks[op["id"]]
        task.kicks += 1
        task.expires_at = op["expires_at"]
        tube.calls["kick"] += 1
        self._move(tube, task, READY)
        return task

    def _apply_touch(self, op):
        tube = self._tubes[op["tube"]]
        task = tube._tasks[op["id"]]
        task.ttr_at = op["ttr_at"]
        tube.calls["touch"] += 1
        self._move(tube, task, TAKEN)  # re-index the new ttr deadline
        return task

    def _apply_release(self, op):
        tube = self._tubes[op["tube"]]
        task = tube._tasks[op["id"]]
        if op["pri"] is not None:
            task.pri = op["pri"]
        return self._apply_move(tube, task, op, "release")

    def _apply_moves(self, op):
        out = []
        tubes = self._tubes
        for move in op["moves"]:
            tube = tubes[move["tube"]]
            self._apply_move(tube, tube._tasks[move["id"]], move, move["event"], out)
        return out

    def _apply_move(self, tube, task, move, event, out=None):
        """Apply one requeue/deadline decision; appends (tube, task, event) notifications."""
        if out is None:
            out = []
        to = move["to"]
        calls = tube.calls
        if event == "ttr":
            task.timeouts += 1
            calls["ttr_expired"] += 1
        elif event == "release" or event == "session" or event == "orphan":
            task.releases += 1
            calls["release"] += 1
        elif event == "delay":
            calls["delay"] += 1
        if to == "ready":
            self._move(tube, task, READY)
        elif to == "delayed":
            task.ready_at = move["ready_at"]
            task.expires_at = move["expires_at"]
            self._move(tube, task, DELAYED)
        elif to == "buried":
            task.buries += 1
            calls["bury"] += 1
            self._move(tube, task, BURIED)
        elif to == "done":
            calls["ttl_expired"] += 1
            self._remove(tube, task)
            event = "ttl"
        elif to == "dead":
            target = self._tubes[move["dead_tube"]]
            calls["dead_letter"] += 1
            self._remove(tube, task)
            tube.done -= 1  # moved on, not done
            twin = task.copy()
            history = list(task.history or ())
            history.append({"tube": tube.name, "attempts": task.attempts, "timeouts": task.timeouts,
                            "releases": task.releases, "buries": task.buries, "kicks": task.kicks,
                            "taken_at": task.taken_at})
            twin.history = history
            twin.tube = target.name
            twin.state = READY
            twin.session = None
            twin.attempts = twin.timeouts = twin.releases = twin.buries = twin.kicks = 0
            twin.expires_at = move["expires_at"]
            if twin.key is not None and twin.key in target.keys:
                twin.key = None
            self._insert(target, twin)
            out.append((tube, task, "dead_letter"))
            out.append((target, twin, "dead_letter"))
            return out
        else:
            raise ReplayError(f"unknown move target {to!r}")
        out.append((tube, task, event))
        return out
