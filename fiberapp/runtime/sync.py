"""Channel and Cond: Tarantool's fiber.channel and fiber.cond on gevent.

Semantics (Tarantool's fiber module):

Channel(capacity=0)
    A FIFO of at most `capacity` messages; capacity 0 is a rendezvous: put() waits until a
    get() takes the message. put(msg, timeout) -> True, or False on timeout or when the
    channel is (or gets) closed. get(timeout) -> the message, or None on timeout or when
    the channel is closed and drained. close() wakes every waiter; messages already buffered
    can still be read. None is a legal message but is indistinguishable from "nothing":
    as in Tarantool, do not send None.
Cond()
    wait(timeout) -> True when signalled, False on timeout. signal() wakes the longest
    waiter (FIFO), broadcast() wakes all; neither yields.

Timeouts go through the clock (a FakeClock moves them in tests). A timeout of 0 or less
never waits: the operation succeeds only if it can do so at once. Cancellation
(errors.Cancelled) is delivered during any wait; a message or a signal that had already
been handed to the cancelled fiber is passed on, never lost. Order: messages are handed
out in put order, and each reader receives any one writer's messages in order, except
in one race: a message handed to a reader that is cancelled before it runs goes to the
next waiting reader or back to the head of the buffer, possibly after a later message
was handed to someone else.

Every waiter is woken exactly once: the first of (hand-over, timeout, close) decides under
the single hub, and the loser finds `done` set and backs off. The actual switch back to
the waiting fiber goes through hub.loop.run_callback, so wakers never yield and timers may
fire in any greenlet (FakeClock fires them in whoever advances it).
"""
import collections

from gevent.hub import Waiter, get_hub

from .clock import SystemClock
from .fiber import testcancel

_TIMEOUT = object()
_CLOSED = object()


class _Wait:
    """One blocked fiber: a gevent Waiter plus the exactly-once decision."""

    __slots__ = ("waiter", "hub", "done", "value", "msg")

    def __init__(self, msg=None):
        self.hub = get_hub()
        self.waiter = Waiter(self.hub)
        self.done = False
        self.value = None
        self.msg = msg  # a writer's message, taken by a reader

    def wake(self, value):
        """Decide this wait's outcome (first caller wins); never yields."""
        if self.done:
            return False
        self.done = True
        self.value = value
        self.hub.loop.run_callback(self.waiter.switch, None)
        return True

    def block(self, clock, timeout, queue):
        """Park the current fiber until woken; on timeout remove self from queue."""
        timer = None
        try:
            testcancel()
        except BaseException:
            self.done = True
            _remove(queue, self)
            raise
        if timeout is not None:
            def expire():
                if not self.done:
                    _remove(queue, self)
                    self.wake(_TIMEOUT)
            timer = clock.call_later(timeout, expire)
        try:
            self.waiter.get()
        finally:
            if timer is not None:
                timer.cancel()
        return self.value


def _remove(queue, item):
    try:
        queue.remove(item)
    except ValueError:
        pass


def _check_timeout(timeout):
    if timeout is not None and not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, not {type(timeout).__name__}")


class Channel:
    """A bounded FIFO between fibers (see the module docstring)."""

    def __init__(self, capacity=0, clock=None):
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 0:
            raise ValueError(f"channel capacity must be an int >= 0, not {capacity!r}")
        self.capacity = capacity
        self.clock = clock if clock is not None else SystemClock()
        self._buf = collections.deque()
        self._readers = collections.deque()  # _Wait, blocked in get() on an empty channel
        self._writers = collections.deque()  # _Wait carrying msg, blocked in put() on a full one
        self._closed = False

    # -- state -----------------------------------------------------------------------------
    def count(self):
        return len(self._buf)

    def __len__(self):
        return len(self._buf)

    def is_empty(self):
        return not self._buf

    def is_full(self):
        return len(self._buf) >= self.capacity

    def is_closed(self):
        return self._closed

    def has_readers(self):
        return bool(self._readers)

    def has_writers(self):
        return bool(self._writers)

    def __repr__(self):
        state = "closed" if self._closed else "open"
        return (f"<Channel {state} {len(self._buf)}/{self.capacity} readers={len(self._readers)} "
                f"writers={len(self._writers)}>")

    # -- operations ------------------------------------------------------------------------
    def put(self, msg, timeout=None):
        _check_timeout(timeout)
        if self._closed:
            return False
        # A waiting reader means the buffer is empty: hand the message over directly.
        while self._readers:
            if self._readers.popleft().wake(msg):
                return True
        if len(self._buf) < self.capacity:
            self._buf.append(msg)
            return True
        if timeout is not None and timeout <= 0:
            return False
        wait = _Wait(msg)
        self._writers.append(wait)
        try:
            outcome = wait.block(self.clock, timeout, self._writers)
        except BaseException:
            # Cancelled while waiting: if a reader already took the message it was delivered
            # (the put happened); otherwise withdraw it.
            if not wait.done:
                wait.done = True
                _remove(self._writers, wait)
            raise
        return outcome is True

    def get(self, timeout=None):
        _check_timeout(timeout)
        if self._buf:
            msg = self._buf.popleft()
            # Room appeared: move the longest-waiting writer's message into the buffer.
            while self._writers:
                writer = self._writers.popleft()
                if writer.wake(True):
                    self._buf.append(writer.msg)
                    break
            return msg
        # Empty buffer (always so for capacity 0): take straight from a waiting writer.
        while self._writers:
            writer = self._writers.popleft()
            if writer.wake(True):
                return writer.msg
        if self._closed:
            return None
        if timeout is not None and timeout <= 0:
            return None
        wait = _Wait()
        self._readers.append(wait)
        try:
            outcome = wait.block(self.clock, timeout, self._readers)
        except BaseException:
            if wait.done:
                if wait.value is not _TIMEOUT and wait.value is not _CLOSED:
                    # A message was handed to us but we were cancelled before taking it:
                    # give it to the next reader, or put it back at the head of the buffer.
                    self._requeue(wait.value)
            else:
                wait.done = True
                _remove(self._readers, wait)
            raise
        if outcome is _TIMEOUT or outcome is _CLOSED:
            return None
        return outcome

    def _requeue(self, msg):
        while self._readers:
            if self._readers.popleft().wake(msg):
                return
        self._buf.appendleft(msg)  # may exceed capacity by one: better than losing it

    def close(self):
        """Close the channel and wake every waiter (readers get None, writers False)."""
        if self._closed:
            return
        self._closed = True
        readers, self._readers = self._readers, collections.deque()
        writers, self._writers = self._writers, collections.deque()
        for wait in readers:
            wait.wake(_CLOSED)
        for wait in writers:
            wait.wake(False)

    def __iter__(self):
        """Iterate over messages until the channel is closed and drained."""
        while True:
            msg = self.get()
            if msg is None and self._closed:
                return
            yield msg


class Cond:
    """A condition variable for fibers (see the module docstring)."""

    def __init__(self, clock=None):
        self.clock = clock if clock is not None else SystemClock()
        self._waiters = collections.deque()

    def waiters(self):
        return len(self._waiters)

    def wait(self, timeout=None):
        _check_timeout(timeout)
        if timeout is not None and timeout <= 0:
            return False
        wait = _Wait()
        self._waiters.append(wait)
        try:
            outcome = wait.block(self.clock, timeout, self._waiters)
        except BaseException:
            if wait.done:
                if wait.value is True:
                    self.signal()  # we were signalled then cancelled: pass the signal on
            else:
                wait.done = True
                _remove(self._waiters, wait)
            raise
        return outcome is True

    def signal(self):
        """Wake the longest waiter, if any. Does not yield."""
        while self._waiters:
            if self._waiters.popleft().wake(True):
                return

    def broadcast(self):
        """Wake every waiter. Does not yield."""
        waiters, self._waiters = self._waiters, collections.deque()
        for wait in waiters:
            wait.wake(True)
