"""Sessions: who owns a taken task.

Every take belongs to a session. By default it is the calling fiber's own session, named
``fiber-<n>``, which ends when the fiber dies (gevent Greenlets only; a raw greenlet, e.g. the
main one, has no death notification and keeps its session until ended explicitly). A session
can also be named: ``open(name)`` then pass ``session=name`` to take/ack/release/touch, or
``bind(name)`` so the current fiber uses it by default (tarantool/queue's identify): a
consumer that reconnects binds the same name again and keeps ownership.

When a session ends, its taken tasks go back (an ``end_session`` op, like any other change).
The HTTP API opens sessions by name, ``touch``es them on every request and ends the idle ones
(``idle(ttl)`` lists them).

Ownership lives in the tasks (task.session, persisted in the take op); the sets kept here are
derived from it, so restore/replay rebuilds them.
"""
from greenlet import getcurrent

from queues import options as opt
from queues.errors import NoSuchSession


class Sessions:
    def __init__(self, store):
        self._store = store
        self._by_fiber = {}   # greenlet -> session name (default or bound)
        self._taken = {}      # session name -> {task id: task}
        self._named = {}      # explicitly opened name -> last seen (monotonic)
        self._seq = 0

    # -- the caller's session ------------------------------------------------------------

    def current(self):
        """The calling fiber's session name, creating its default session on first use."""
        g = getcurrent()
        name = self._by_fiber.get(g)
        if name is None:
            self._seq += 1
            name = f"fiber-{self._seq}"
            self._by_fiber[g] = name
            rawlink = getattr(g, "rawlink", None)
            if rawlink is not None:
                rawlink(self._fiber_died)
        return name

    def peek_current(self):
        """The calling fiber's session name, or None if it never had one (changes nothing)."""
        return self._by_fiber.get(getcurrent())

    def bind(self, name):
        """Make ``name`` the current fiber's session (opening it); returns the name."""
        self.open(name)
        g = getcurrent()
        old = self._by_fiber.get(g)
        self._by_fiber[g] = name
        if old is None:
            rawlink = getattr(g, "rawlink", None)
            if rawlink is not None:
                rawlink(self._fiber_died)
        return name

    def unbind(self):
        self._by_fiber.pop(getcurrent(), None)

    def _fiber_died(self, g):
        # Runs in the hub: must not block. The store ends the session from a fiber.
        name = self._by_fiber.pop(g, None)
        if name is not None and name not in self._named:
            if self._taken.get(name):
                self._store._end_session_later(name)
            else:
                self._taken.pop(name, None)

    # -- named sessions -------------------------------------------------------------------

    def open(self, name):
        opt.name(name, "session")
        self._named[name] = self._store.clock.monotonic()
        return name

    def touch(self, name):
        if name not in self._named:
            raise NoSuchSession(name)
        self._named[name] = self._store.clock.monotonic()

    def end(self, name):
        """End a session: its taken tasks go back (counted as released). Returns how many."""
        self._named.pop(name, None)
        for g, bound in list(self._by_fiber.items()):
            if bound == name:
                del self._by_fiber[g]
        return self._store._end_session(name)

    def exists(self, name):
        return name in self._named or bool(self._taken.get(name))

    def names(self):
        return sorted(set(self._named) | {name for name, tasks in self._taken.items() if tasks})

    def taken(self, name):
        """Ids of the tasks the session has taken, in id order."""
        return sorted(self._taken.get(name, ()))

    def idle(self, ttl, now=None):
        """Named sessions not touched for ttl seconds (the HTTP API ends them)."""
        if now is None:
            now = self._store.clock.monotonic()
        return [name for name, seen in self._named.items() if now - seen >= ttl]

    # -- kept in step by the store's apply ------------------------------------------------

    def _take(self, task):
        tasks = self._taken.get(task.session)
        if tasks is None:
            tasks = self._taken[task.session] = {}
        tasks[task.id] = task

    def _untake(self, task):
        # An emptied set stays (the session will likely take again); it goes when the
        # session ends or its fiber dies.
        tasks = self._taken.get(task.session)
        if tasks is not None:
            tasks.pop(task.id, None)
        task.session = None

    def _tasks_of(self, name):
        return list(self._taken.get(name, {}).values())

    def _clear(self):
        self._taken = {}
