"""The task record.

One ``Task`` per live task (a store holds millions, so it is kept small). The same object is
returned to callers: treat it as read-only (the store changes it as the task moves). Fields:

persisted (in ops, dump() and to_dict()):
    id, tube, state, data, pri, ttl, ttr, delay, utube, key,
    attempts, timeouts, releases, buries, kicks     -- per-task counters
    created_at, taken_at, ready_at, ttr_at, expires_at  -- monotonic seconds (None = never)
    session                                         -- owner while TAKEN, else None
    history                                         -- earlier lives (dead-letter moves), list
in memory only:
    existing   -- True on the copy put(key=K) returns when a live task already held K
    _entry     -- the driver's ready-index entry (identity marks it valid; see drivers.base)

ttl/ttr are None for "infinite". Times ending in ``_at`` are monotonic in memory;
to_dict() converts them to wall-clock for display.
"""
from operator import attrgetter, itemgetter

from queues.states import DONE

# Persisted fields, in dump() order.
FIELDS = (
    "id", "tube", "state", "data", "pri", "ttl", "ttr", "delay", "utube", "key",
    "attempts", "timeouts", "releases", "buries", "kicks",
    "created_at", "taken_at", "ready_at", "ttr_at", "expires_at", "session", "history",
)
TIME_FIELDS = ("created_at", "taken_at", "ready_at", "ttr_at", "expires_at")

# The persisted values of a task / of a record dict, as a tuple in FIELDS order (C-level).
_row_of_task = attrgetter(*FIELDS)
_row_of_record = itemgetter(*FIELDS)


class Task:
    # No __slots__: with class-level defaults for the fields most tasks never set, creating
    # a task assigns 14 attributes instead of 25 (measured ~35% cheaper), and CPython's
    # key-sharing instance dicts keep the size within a few bytes of a slotted object.
    attempts = 0
    timeouts = 0
    releases = 0
    buries = 0
    kicks = 0
    taken_at = None
    ttr_at = None
    session = None
    history = None
    existing = False
    _entry = None

    def __init__(self, id, tube, state, data, pri, ttl, ttr, delay, utube, key,
                 created_at, ready_at, expires_at, clock=None):
        self.id = id
        self.tube = tube
        self.state = state
        self.data = data
        self.pri = pri
        self.ttl = ttl
        self.ttr = ttr
        self.delay = delay
        self.utube = utube
        self.key = key
        self.created_at = created_at
        self.ready_at = ready_at
        self.expires_at = expires_at
        self._clock = clock

    def __repr__(self):
        return f"<Task {self.id} {self.tube}:{self.state} pri={self.pri} attempts={self.attempts}>"

    @property
    def done(self):
        return self.state == DONE

    def record(self):
        """The persisted fields as a dict of msgpack-able values (monotonic times)."""
        return dict(zip(FIELDS, _row_of_task(self)))

    def row(self):
        """The persisted fields as a tuple in FIELDS order (what a snapshot table holds)."""
        return _row_of_task(self)

    @classmethod
    def from_row(cls, row, clock=None):
        """A task from its persisted values in FIELDS order (a snapshot table's row): one
        unpacking, no dict; recovery builds a million of these.

        Built like a live task (``__init__``, then only the fields that differ from the
        class defaults, in the order a live task gets them): a task that sets every field
        at once, after many tasks exist, gets a full instance dict from CPython (3.11)
        instead of the compact shared-key layout, ~1,000 instead of ~320 bytes per task
        (measured with tracemalloc, 300,000 recovered tasks)."""
        (id, tube, state, data, pri, ttl, ttr, delay, utube, key, attempts, timeouts, releases,
         buries, kicks, created_at, taken_at, ready_at, ttr_at, expires_at, session, history) = row
        task = cls(id, tube, state, data, pri, ttl, ttr, delay, utube, key, created_at, ready_at,
                   expires_at, clock)
        if attempts:
            task.attempts = attempts
        if taken_at is not None:
            task.taken_at = taken_at
        if ttr_at is not None:
            task.ttr_at = ttr_at
        if session is not None:
            task.session = session
        if timeouts:
            task.timeouts = timeouts
        if releases:
            task.releases = releases
        if buries:
            task.buries = buries
        if kicks:
            task.kicks = kicks
        if history is not None:
            task.history = history
        return task

    @classmethod
    def from_record(cls, rec, clock=None):
        return cls.from_row(_row_of_record(rec), clock)

    def copy(self):
        twin = Task.from_record(self.record(), self._clock)
        return twin

    def to_dict(self):
        """JSON-ready view: times as wall-clock seconds since the epoch, bytes left as bytes
        (the HTTP API decides how to encode them)."""
        out = self.record()
        clock = self._clock
        offset = clock.time() - clock.monotonic() if clock is not None else 0.0
        for name in TIME_FIELDS:
            if out[name] is not None:
                out[name] = out[name] + offset
        out["existing"] = self.existing
        return out

