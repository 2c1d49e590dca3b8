"""HTTP consumer sessions: named by a header, ended after ``session_ttl`` of silence.

A consumer names its session in the ``X-Fiberapp-Session`` header; the store owns the
session itself (ownership of taken tasks, releasing them when it ends). This module only
decides *when* an HTTP session ends: when no request has carried its name for
``session_ttl`` seconds. A session with a request in flight (a long-poll take) is never
idle, however long the wait.

Because the ttl is the same for everyone, the least recently seen session is always the
next to expire: an insertion-ordered dict (oldest first) replaces a heap, every
operation is O(1), and one reaper fiber sleeps until the oldest deadline.
"""
import logging
import re
import secrets

import gevent.event

from .encode import clock_reads
from .errors import InvalidSession

log = logging.getLogger("fiberapp.api")

HEADER = "X-Fiberapp-Session"
#: The store's name alphabet (letters, digits, -_.), at most 128 characters.
_TOKEN = re.compile(r"[A-Za-z0-9_.-]{1,128}\Z")


#: HTTP sessions live in the store under this prefix, apart from fiber scripts' sessions:
#: a client naming itself "fiber-3" must not act as (or end) a script fiber's session.
STORE_PREFIX = "http."


def store_name(token):
    return STORE_PREFIX + token


#: The same alphabet as a string for str.strip: a token is valid when stripping these
#: characters leaves nothing (one C call on the hot path instead of a regex match).
_TOKEN_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"


def parse_token(value):
    """Return the session name from a header value, or raise InvalidSession (400)."""
    if not _TOKEN.match(value):
        raise InvalidSession(
            f"{HEADER} must be 1 to 128 characters of letters, digits and -_."
        )
    return value


def check_token(value):
    """parse_token, cheaper: the same answer for every str (tests hold them together)."""
    if 0 < len(value) <= 128 and not value.strip(_TOKEN_CHARS):
        return value
    return parse_token(value)  # raises


def new_token():
    return secrets.token_urlsafe(16)


class SessionTracker:
    """Tracks when each HTTP session was last seen and ends the idle ones.

    Names here are the header's tokens; in the store each is ``store_name(token)``.
    ``sessions`` is a callable returning the store's session registry (looked up per use:
    the store may appear after the API is installed), with ``open(name)`` and ``end(name)``
    (the latter returns the session's taken tasks to ready). ``clock`` gives monotonic time.
    Usage per request: ``enter(name)`` before calling the store, ``leave(name)`` after
    (in a finally). ``expire()`` ends every session idle for ``ttl`` seconds; the reaper
    fiber started by ``start(runtime)`` calls it when the oldest deadline comes.
    """

    def __init__(self, sessions, clock, ttl=60.0):
        if ttl <= 0:
            raise ValueError("session_ttl must be positive")
        self.sessions = sessions
        self.clock = clock
        # leave() runs on every take and ack: the system clock's reading without a method call
        self._monotonic = clock_reads(clock)[1] if clock is not None else None
        self.ttl = float(ttl)
        self._idle = {}  # name -> last seen (monotonic); insertion order = oldest first
        self._busy = {}  # name -> requests in flight
        self._wake = gevent.event.Event()
        self._fiber = None
        self.ended = 0  # sessions ended by expiry, for /metrics

    def __len__(self):
        return len(self._idle) + len(self._busy)

    def __contains__(self, name):
        return name in self._idle or name in self._busy

    def enter(self, name):
        busy = self._busy.get(name)
        if busy is not None:
            self._busy[name] = busy + 1
            return
        if self._idle.pop(name, None) is None:
            self.sessions().open(store_name(name))
        self._busy[name] = 1

    def leave(self, name):
        busy = self._busy.get(name)
        if busy is None:
            return
        if busy > 1:
            self._busy[name] = busy - 1
            return
        del self._busy[name]
        self._idle[name] = self._monotonic()

    def end_now(self, name):
        """End an idle session at once (one nobody can name again). No-op while in use."""
        if name in self._busy or self._idle.pop(name, None) is None:
            return
        self.sessions().end(store_name(name))

    def next_deadline(self):
        for seen in self._idle.values():
            return seen + self.ttl
        return None

    def expire(self):
        """End every session idle for ttl or longer; returns their names, oldest first."""
        limit = self.clock.monotonic() - self.ttl
        ended = []
        while self._idle:
            name, seen = next(iter(self._idle.items()))
            if seen > limit:
                break
            del self._idle[name]
            try:
                self.sessions().end(store_name(name))
            except Exception:  # a WAL refusal, say: try again one ttl later
                log.exception("could not end idle session %r; will retry", name)
                self._idle[name] = self.clock.monotonic()
                break
            ended.append(name)
        self.ended += len(ended)
        return ended

    # -- the reaper fiber -----------------------------------------------------------------

    def start(self, runtime):
        if self._fiber is None:
            self._fiber = runtime.spawn(self._run, name="api-session-reaper")
        return self._fiber

    def stop(self):
        fiber, self._fiber = self._fiber, None
        if fiber is not None:
            fiber.cancel()

    def _run(self):
        while True:
            deadline = self.next_deadline()
            self._wake.clear()
            if deadline is None:
                # Nothing idle: look again in one ttl. A session going idle meanwhile
                # expires no earlier than that, so nobody needs to wake the reaper (which
                # keeps the request path free of wake-ups).
                self._wait_until(self.clock.monotonic() + self.ttl)
                continue
            if deadline > self.clock.monotonic():
                # Deadlines only move later (the ttl is the same for all), so no early
                # wake-up is needed either: sleep until the oldest one and look again.
                self._wait_until(deadline)
            self.expire()

    def _wait_until(self, deadline):
        timer = self.clock.call_at(deadline, self._wake.set)
        try:
            self._wake.wait()
        finally:
            timer.cancel()
