"""The driver interface and the index pieces the built-in drivers are composed of.

A driver decides two things for its tube: which READY task ``take`` gets next, and which
deadlines (delay, ttr, ttl) fall due when. It is plain synchronous code: it never blocks,
sleeps, reads the clock or does I/O, and it never changes a task: the store changes task
state (live and on WAL replay alike) and then tells the driver, which only indexes.

Interface (checked by ``check_driver`` when a driver is registered):

    name: str                        the driver's registered name
    put_options: frozenset           which of {"pri", "ttl", "ttr", "delay", "utube"} put() takes
    tube_options: dict               create_tube option -> validator(option, value) -> value
    __init__(self, options)          options: the validated tube options (a dict)
    changed(task, old) -> deadline   task.state (or one of its deadlines) changed from ``old``
                                     (None for a new task; old == task.state re-indexes the
                                     task, e.g. after touch). Returns the deadline the change
                                     scheduled (a monotonic float) or None.
    candidate() -> Task | None       the task take() would get now; changes nothing
    due(now) -> [(task, event)]      tasks whose deadline <= now, event in "delay" | "ttr" |
                                     "ttl"; removes them from the schedule (the store then
                                     applies the moves, or re-indexes them with changed(t, t.state))
    next_deadline() -> float | None  the earliest scheduled deadline
    clear()                          forget every task (truncate)

Optional: ``capacity`` attribute (int, 0 = unlimited): the store refuses puts past it.
Optional: ``changed_on_ack``: what the store calls instead of changed(task, TAKEN) when a
task is acked; None when an ack needs no indexing (the store then skips the call).

Indexes use lazy deletion: an entry stays in a heap after its task moved on and is dropped
when it reaches the top. An entry is valid only while the task is still in the state (and has
the deadline) it was indexed for; ready-heap entries are matched by identity (task._entry).
Heaps are rebuilt when stale entries outnumber live ones, so memory stays O(live tasks).
"""
import heapq

from queues.errors import DriverError
from queues.states import BURIED, DELAYED, READY, TAKEN

_heappush = heapq.heappush
_heappop = heapq.heappop

REQUIRED = ("changed", "candidate", "due", "next_deadline", "clear")
PUT_OPTIONS = frozenset({"pri", "ttl", "ttr", "delay", "utube"})


def check_driver(cls):
    """Refuse a driver class that does not implement the interface above."""
    problems = []
    if not isinstance(getattr(cls, "name", None), str):
        problems.append("a str 'name'")
    put_options = getattr(cls, "put_options", None)
    if not isinstance(put_options, frozenset) or not put_options <= PUT_OPTIONS:
        problems.append(f"'put_options', a frozenset within {sorted(PUT_OPTIONS)}")
    if not isinstance(getattr(cls, "tube_options", None), dict):
        problems.append("a dict 'tube_options'")
    for method in REQUIRED:
        if not callable(getattr(cls, method, None)):
            problems.append(f"a method {method}()")
    if problems:
        raise DriverError(f"driver {cls!r} lacks " + ", ".join(problems))
    return cls


class LazyHeap:
    """A heap of tuples whose last item is the task; ``valid(entry)`` says if it still counts.

    ``live`` is an estimate of valid entries (pushes minus known invalidations); when the heap
    holds more than twice that (+64), it is rebuilt from the valid entries.
    """

    __slots__ = ("heap", "live", "valid")

    def __init__(self, valid):
        self.heap = []
        self.live = 0
        self.valid = valid

    def push(self, entry):
        _heappush(self.heap, entry)
        self.live += 1

    def dead(self):
        self.live -= 1
        if len(self.heap) > 2 * self.live + 64:
            self.heap = [e for e in self.heap if self.valid(e)]
            heapq.heapify(self.heap)
            self.live = len(self.heap)

    def extend(self, entries):
        """Add many entries at once: one heapify instead of a push each (recovery)."""
        heap = self.heap
        heap.extend(entries)
        heapq.heapify(heap)
        self.live += len(entries)

    def top(self):
        heap = self.heap
        valid = self.valid
        while heap:
            entry = heap[0]
            if valid(entry):
                return entry
            _heappop(heap)
        return None

    def pop_due(self, now, out, event):
        heap = self.heap
        valid = self.valid
        while heap and heap[0][0] <= now:
            entry = _heappop(heap)
            if valid(entry):
                out.append((entry[-1], event))

    def clear(self):
        self.heap = []
        self.live = 0


def _ready_valid(entry):
    task = entry[-1]
    return task._entry is entry and task.state == READY


class ReadyHeap:
    """All READY tasks of a tube in one heap, ordered by (pri, id): take gets the top.

    The hot path of the whole store: changed() and candidate() are written out flat.
    """

    __slots__ = ("ready",)

    def __init__(self):
        self.ready = LazyHeap(_ready_valid)

    def changed(self, task, old):
        """Index a change (the Driver interface's changed, for drivers without deadlines)."""
        if task.state == READY:
            if old == READY:  # re-index: the old entry becomes stale
                self.ready.dead()
            entry = (task.pri, task.id, task)
            task._entry = entry
            ready = self.ready
            _heappush(ready.heap, entry)
            ready.live += 1
        elif old == READY:
            ready = self.ready
            heap = ready.heap
            if heap and heap[0] is task._entry:  # the usual case: take got the top
                _heappop(heap)
                ready.live -= 1
            else:
                ready.dead()
        return None

    def load(self, tasks):
        """Index many new READY tasks at once (recovery); schedules nothing."""
        entries = []
        append = entries.append
        for task in tasks:
            task._entry = entry = (task.pri, task.id, task)
            append(entry)
        self.ready.extend(entries)

    def candidate(self):
        heap = self.ready.heap
        while heap:
            entry = heap[0]
            task = entry[2]
            if task._entry is entry and task.state == READY:
                return task
            _heappop(heap)
        return None

    def clear(self):
        self.ready.clear()


class UtubeReady:
    """READY tasks per sub-queue (utube), at most one TAKEN task per sub-queue.

    Each utube has its own heap; ``avail`` holds (pri, id, utube) for the head of every utube
    that has no taken task, so candidate() is O(log n) however many tasks and keys there are
    (tarantool/queue #98, #228 were full scans). ``posted`` maps each free utube to *the*
    entry of ``avail`` that is live for it (matched by identity: no tuple is built to check);
    every other entry is stale and is popped when it reaches the top. Every posted entry is
    in ``avail``.

    With utube_10k this index was most of a cycle's cost, so the hot cases are written out:
    take of the head (popped from both heaps at once) and ack (the next head posted).
    """

    __slots__ = ("queues", "busy", "avail", "posted")

    def __init__(self):
        self.queues = {}   # utube -> LazyHeap of (pri, id, task)
        self.busy = {}     # utube -> number of TAKEN tasks (0 or 1 in normal operation)
        self.avail = []    # heap of (pri, id, utube)
        self.posted = {}   # utube -> its live entry in avail

    def _head(self, utube):
        """The first valid (pri, id, task) entry of utube's heap, or None (forgetting it)."""
        q = self.queues.get(utube)
        if q is None:
            return None
        heap = q.heap
        while heap:
            entry = heap[0]
            task = entry[2]
            if task._entry is entry and task.state == READY:
                return entry
            _heappop(heap)
        del self.queues[utube]
        return None

    def _post(self, u):
        """Make sure free utube u's current head is in avail."""
        entry = self._head(u)
        posted = self.posted
        if entry is None:
            posted.pop(u, None)
            return
        old = posted.get(u)
        if old is None or old[1] != entry[1] or old[0] != entry[0]:
            old = posted[u] = (entry[0], entry[1], u)
            _heappush(self.avail, old)

    def changed(self, task, old):
        state = task.state
        u = task.utube
        busy = self.busy
        if state == TAKEN:
            if old != TAKEN:
                busy[u] = busy.get(u, 0) + 1
            if old == READY:
                q = self.queues.get(u)
                if q is not None:
                    heap = q.heap
                    if heap and heap[0] is task._entry:  # the usual case: take got the head
                        _heappop(heap)
                        q.live -= 1
                    else:
                        q.dead()
                # u is busy now: its avail entry is stale; drop it at once when it is the
                # top (it is, when take got the task from candidate()).
                avail = self.avail
                if avail and self.posted.get(u) is avail[0]:
                    _heappop(avail)
                    del self.posted[u]
            return None
        freed = False
        if old == TAKEN:
            n = busy.get(u, 0) - 1
            if n > 0:
                busy[u] = n
            else:
                busy.pop(u, None)
                freed = True
        elif old == READY:
            q = self.queues.get(u)
            if q is not None:
                q.dead()
        if state == READY:
            q = self.queues.get(u)
            if q is None:
                q = self.queues[u] = LazyHeap(_ready_valid)
            entry = (task.pri, task.id, task)
            task._entry = entry
            _heappush(q.heap, entry)
            q.live += 1
            if not busy.get(u):
                self._post(u)
        elif (freed or old == READY) and not busy.get(u):
            self._post(u)
        return None

    def candidate(self):
        avail = self.avail
        posted = self.posted
        while avail:
            top = avail[0]
            u = top[2]
            if posted.get(u) is not top:
                _heappop(avail)
                continue
            if self.busy.get(u):
                _heappop(avail)
                del posted[u]  # re-posted when the utube is free again
                continue
            entry = self._head(u)
            if entry is None or entry[1] != top[1]:  # defensive: re-post the real head
                _heappop(avail)
                del posted[u]
                if entry is not None:
                    self._post(u)
                continue
            return entry[2]
        return None

    def clear(self):
        self.queues = {}
        self.busy = {}
        self.avail = []
        self.posted = {}


def _delay_valid(entry):
    task = entry[-1]
    return task.state == DELAYED and task.ready_at == entry[0]


def _ttr_valid(entry):
    task = entry[-1]
    return task.state == TAKEN and task.ttr_at == entry[0]


def _ttl_valid(entry):
    task = entry[-1]
    return (task.state == READY or task.state == BURIED) and task.expires_at == entry[0]


class Deadlines:
    """The three schedules of the *ttl drivers: delay (DELAYED until ready_at), ttr (TAKEN
    until ttr_at), ttl (READY or BURIED until expires_at; a TAKEN task does not expire from
    under its consumer, tarantool/queue #146: its expiry is applied when it comes back)."""

    __slots__ = ("delay", "ttr", "ttl")

    def __init__(self):
        self.delay = LazyHeap(_delay_valid)
        self.ttr = LazyHeap(_ttr_valid)
        self.ttl = LazyHeap(_ttl_valid)

    def changed(self, task, old):
        """Index the task's new deadline; returns the earliest one it scheduled (or None)."""
        if old == DELAYED:
            self.delay.dead()
        elif old == TAKEN:
            if task.ttr_at is not None:
                self.ttr.dead()
        elif old == READY or old == BURIED:
            if task.expires_at is not None:
                self.ttl.dead()
        state = task.state
        if state == READY or state == BURIED:
            at = task.expires_at
            if at is not None:
                self.ttl.push((at, task.id, task))
            return at
        if state == TAKEN:
            at = task.ttr_at
            if at is not None:
                self.ttr.push((at, task.id, task))
            return at
        if state == DELAYED:
            at = task.ready_at
            self.delay.push((at, task.id, task))
            return at
        return None

    def load(self, tasks):
        """Schedule the ttl of many new READY tasks at once; returns the earliest or None."""
        ttl = [(task.expires_at, task.id, task) for task in tasks if task.expires_at is not None]
        if not ttl:
            return None
        self.ttl.extend(ttl)
        return min(entry[0] for entry in ttl)

    def due(self, now):
        out = []
        self.delay.pop_due(now, out, "delay")
        self.ttr.pop_due(now, out, "ttr")
        self.ttl.pop_due(now, out, "ttl")
        return out

    def next_deadline(self):
        best = None
        for lh in (self.delay, self.ttr, self.ttl):
            entry = lh.top()
            if entry is not None and (best is None or entry[0] < best):
                best = entry[0]
        return best

    def clear(self):
        self.delay.clear()
        self.ttr.clear()
        self.ttl.clear()


class Driver:
    """Composition of a ready index and (for *ttl drivers) a Deadlines schedule.

    Subclasses set ``name``, ``put_options``, ``tube_options`` and the two factories.
    """

    name = None
    put_options = frozenset()
    tube_options = {}
    capacity = 0
    ready_index = ReadyHeap
    deadlines = None

    def __init__(self, options):
        self.options = dict(options)
        self._ready = self.ready_index()
        self._deadlines = self.deadlines() if self.deadlines is not None else None
        # Hot path: skip a level of calls where the composition allows it.
        self.candidate = self._ready.candidate
        self.changed_on_ack = self.changed
        if self._deadlines is None:
            self.changed = self._ready.changed
            if type(self._ready) is ReadyHeap:
                # TAKEN -> DONE touches nothing a ReadyHeap indexes (its entry went at take):
                # skipping the call is ~3% of a put+take+ack cycle.
                self.changed_on_ack = None
            else:
                self.changed_on_ack = self.changed

    def changed(self, task, old):
        self._ready.changed(task, old)
        deadlines = self._deadlines
        if deadlines is not None:
            return deadlines.changed(task, old)
        return None

    def candidate(self):
        return self._ready.candidate()

    def load(self, tasks):
        """Index many new READY tasks at once (a snapshot's restore); returns the earliest
        deadline scheduled, or None. Same result as changed(task, None) for each."""
        ready_load = getattr(self._ready, "load", None)
        if ready_load is None:
            at = None
            for task in tasks:
                t = self.changed(task, None)
                if t is not None and (at is None or t < at):
                    at = t
            return at
        ready_load(tasks)
        return self._deadlines.load(tasks) if self._deadlines is not None else None

    def due(self, now):
        if self._deadlines is None:
            return []
        return self._deadlines.due(now)

    def next_deadline(self):
        if self._deadlines is None:
            return None
        return self._deadlines.next_deadline()

    def clear(self):
        self._ready.clear()
        if self._deadlines is not None:
            self._deadlines.clear()
