"""Tasks as the API shows them: ``task_json`` (a dict) and ``TaskEncoder`` (JSON bytes).

A task answer is every persisted field except "session" (the owner's token: showing it
would let anyone ack for the owner), times as wall-clock seconds, then ``"existing":
true`` on the copy a put with a held key returns, then ``"data_encoding": "base64"`` when
the data are bytes (fiber scripts may put bytes; JSON cannot carry them).

``task_json`` builds that dict; ``TaskEncoder.one``/``many`` write the same JSON straight
to bytes, byte for byte what ``orjson.dumps`` gives for the dict (a test holds them
together for every state and field). Every put, take, ack, release and touch answers a
task, and building a 21-key dict to hand it to orjson was the API's largest cost per
request (~35,000 instructions with the reply, against ~9,000 for the bytes template;
cachegrind, bench/RESULTS.md).
"""
import base64
import operator
import time as _time
from types import MappingProxyType

import orjson

from queues.states import BURIED, DELAYED, DONE, READY, TAKEN
from queues.task import FIELDS, TIME_FIELDS

_SHOWN = tuple(f for f in FIELDS if f != "session")
_read = operator.attrgetter(*_SHOWN)
_TIMES = tuple(i for i, f in enumerate(_SHOWN) if f in TIME_FIELDS)
_dumps = orjson.dumps
_NULL = b"null"
_STATES = MappingProxyType({s: _dumps(s) for s in (READY, TAKEN, DONE, BURIED, DELAYED)})
_EXISTING = b',"existing":true'
_BASE64 = b',"data_encoding":"base64"'

#: The fields in _SHOWN order (the test checks the two agree). %b: JSON bytes; %d: ints.
#: Runs of fields that usually hold their defaults are filled in as one piece each.
_TASK = (b'%b{"id":%d,"tube":%b,"state":%b,"data":%b,"pri":%b,%b%b"created_at":%b,%b"history":%b%b}%b')
_OPTIONS = b'"ttl":%b,"ttr":%b,"delay":%b,"utube":%b,"key":%b,'
_NO_OPTIONS = _OPTIONS % (_NULL, _NULL, _NULL, _NULL, _NULL)
_COUNTERS = b'"attempts":%d,"timeouts":%d,"releases":%d,"buries":%d,"kicks":%d,'
#: attempts = 0..15 with no timeouts, releases, buries or kicks: the usual counters.
_FIRST_COUNTERS = tuple(_COUNTERS % (n, 0, 0, 0, 0) for n in range(16))
_TIMES_AFTER = b'"taken_at":%b,"ready_at":%b,"ttr_at":%b,"expires_at":%b,'
_NO_TIMES_AFTER = _TIMES_AFTER % (_NULL, _NULL, _NULL, _NULL)
_SMALL_INTS = tuple(b"%d" % n for n in range(256))
TEMPLATE_FIELDS = ("id", "tube", "state", "data", "pri", "ttl", "ttr", "delay", "utube", "key",
                   "attempts", "timeouts", "releases", "buries", "kicks", "created_at", "taken_at",
                   "ready_at", "ttr_at", "expires_at", "history")


def task_json(task, clock):
    """The task as a JSON-ready dict: times as wall-clock seconds (``clock`` is the store's)."""
    values = list(_read(task))
    offset = clock.time() - clock.monotonic()
    for i in _TIMES:
        if values[i] is not None:
            values[i] += offset
    out = dict(zip(_SHOWN, values))
    if task.existing:
        out["existing"] = True
    data = out["data"]
    if isinstance(data, (bytes, bytearray)):
        out["data"] = base64.b64encode(data).decode("ascii")
        out["data_encoding"] = "base64"
    return out


def clock_reads(clock):
    """(time, monotonic) for clock: the time module's own functions for the system clock
    (the same values without a Python-level call), the clock's methods otherwise."""
    cls = type(clock)
    if cls.__name__ == "SystemClock" and cls.__module__ == "fiberapp.runtime.clock":
        return _time.time, _time.monotonic
    return clock.time, clock.monotonic


class TaskEncoder:
    """Task answers as JSON bytes for one clock (the store's)."""

    __slots__ = ("clock", "_time", "_monotonic", "_tube", "_tube_json")

    def __init__(self, clock):
        self.clock = clock
        self._time, self._monotonic = clock_reads(clock)
        self._tube = self._tube_json = None  # the last tube name encoded, and its JSON

    def one(self, task, prefix=b'{"task":', suffix=b"}"):
        """prefix + the task's JSON object + suffix (default: the {"task": {...}} answer)."""
        tube = task.tube
        if tube is not self._tube:
            self._tube, self._tube_json = tube, _dumps(tube)
        return self._encode(task, self._time() - self._monotonic(), prefix, suffix, self._tube_json)

    def many(self, tasks, prefix=b'{"tasks":[', suffix=b"]}"):
        """prefix + the tasks' JSON objects, comma-separated + suffix."""
        offset = self._time() - self._monotonic()
        encode = self._encode
        return prefix + b",".join([encode(t, offset, b"", b"", _dumps(t.tube)) for t in tasks]) + suffix

    @staticmethod
    def _encode(task, offset, prefix, suffix, tube, dumps=_dumps, null=_NULL, states=_STATES,
                small=_SMALL_INTS, first=_FIRST_COUNTERS):
        data = task.data
        kind = type(data)
        if kind is bytes or kind is bytearray:
            data = dumps(base64.b64encode(data).decode("ascii"))
            tail = _BASE64
        else:
            data = dumps(data)
            tail = b""
        if task.existing:
            tail = _EXISTING + tail
        state = task.state
        pri = task.pri
        ttl, ttr, delay, utube, key = task.ttl, task.ttr, task.delay, task.utube, task.key
        if ttl is None and ttr is None and delay is None and utube is None and key is None:
            options = _NO_OPTIONS
        else:
            options = _OPTIONS % (
                null if ttl is None else dumps(ttl),
                null if ttr is None else dumps(ttr),
                null if delay is None else dumps(delay),
                null if utube is None else dumps(utube),
                null if key is None else dumps(key))
        attempts, timeouts, releases, buries, kicks = (task.attempts, task.timeouts, task.releases,
                                                       task.buries, task.kicks)
        if attempts < 16 and not (timeouts or releases or buries or kicks):
            counters = first[attempts]
        else:
            counters = _COUNTERS % (attempts, timeouts, releases, buries, kicks)
        created, taken, ready, ttr_at, expires = (task.created_at, task.taken_at, task.ready_at,
                                                  task.ttr_at, task.expires_at)
        history = task.history
        return _TASK % (
            prefix, task.id, tube, states.get(state) or dumps(state), data,
            small[pri] if pri < 256 else b"%d" % pri,
            options, counters,
            null if created is None else dumps(created + offset),
            _NO_TIMES_AFTER if taken is None and ready is None and ttr_at is None and expires is None
            else _TIMES_AFTER % (
                null if taken is None else dumps(taken + offset),
                null if ready is None else dumps(ready + offset),
                null if ttr_at is None else dumps(ttr_at + offset),
                null if expires is None else dumps(expires + offset)),
            null if history is None else dumps(history),
            tail, suffix)
