"""Supervised fibers: restart a fiber that dies with an error, with exponential backoff.

    sup = runtime.supervise(poll_orders, db, name="poller", restart="on-error",
                            backoff=(0.1, 30.0))

Policy (`restart`):
    "on-error"  (default) restart after an exception; a clean return ends supervision.
    "always"    restart after an exception or a return (a service that must keep running);
                after a return the restart waits backoff_min.
    "never"     run once: the supervisor only records the outcome.
Cancellation ends supervision for good, whether it comes through Supervisor.cancel(),
Runtime.stop(), or by cancelling the current fiber directly.

Backoff: the n-th consecutive restart waits min(backoff_max, backoff_min * 2**(n-1))
seconds of the runtime's clock; a run that lasted at least backoff_max counts as healthy
and resets n. Each incarnation is a new Fiber (new id) with the same name.

No extra fiber watches the child: a rawlink on the child's death arms a clock timer that
spawns the next incarnation, so a supervised fiber costs one registry row, not two.
"""
import logging

from gevent.event import Event
from greenlet import GreenletExit

from .errors import FiberCancelled, FiberError, FiberTimeout
from .fiber import wait_ready

log = logging.getLogger("fiberapp.supervisor")

POLICIES = ("on-error", "always", "never")


class Supervisor:
    """Handle on a supervised fiber. Create with Runtime.supervise()."""

    def __init__(self, runtime, fn, args, kwargs, name, restart="on-error", backoff=(0.1, 30.0)):
        if restart not in POLICIES:
            raise FiberError(f"restart policy must be one of {POLICIES}, not {restart!r}")
        try:
            low, high = (float(backoff[0]), float(backoff[1]))
        except (TypeError, ValueError, IndexError):
            raise FiberError(f"backoff must be (min_seconds, max_seconds), not {backoff!r}") from None
        if not 0 <= low <= high:
            raise FiberError(f"backoff needs 0 <= min <= max, got {backoff!r}")
        self.runtime = runtime
        self.name = name
        self.restart = restart
        self.backoff = (low, high)
        self._fn, self._args, self._kwargs = fn, args, kwargs
        self.restarts = 0
        self.consecutive = 0  # failures in a row (drives the backoff)
        self.fiber = None  # the current (or last) incarnation
        self.status = "running"  # running | backoff | done | failed | cancelled
        self.result = None
        self.last_error = None
        self.next_start = None  # clock.monotonic() of the pending restart, if any
        self._timer = None
        self._started_at = None
        self._done = Event()
        self._spawn()

    def __repr__(self):
        return f"<Supervisor {self.name!r} {self.status} restarts={self.restarts}>"

    def _spawn(self):
        self._timer = None
        self.next_start = None
        if self.status != "backoff" and self.status != "running":
            return
        self.status = "running"
        self._started_at = self.runtime.clock.monotonic()
        self.fiber = self.runtime.spawn(self._fn, *self._args, name=self.name, **self._kwargs)
        self.fiber.rawlink(self._on_death)

    def _on_death(self, fiber):
        # Runs in the hub once the incarnation is dead; must not block.
        if fiber is not self.fiber or self._done.is_set():
            return
        if fiber.successful():
            value = fiber.value
            if isinstance(value, GreenletExit) or fiber.cancelled:
                return self._finish("cancelled")
            self.result = value
            if self.restart != "always":
                return self._finish("done")
            self.consecutive = 0
            delay = self.backoff[0]  # never a tight loop, even for a fiber that returns at once
        else:
            self.last_error = fiber.exception
            if self.restart == "never":
                return self._finish("failed")
            ran = self.runtime.clock.monotonic() - self._started_at
            if ran >= self.backoff[1]:
                self.consecutive = 0
            self.consecutive += 1
            delay = min(self.backoff[1], self.backoff[0] * 2 ** (self.consecutive - 1))
            log.warning("supervised fiber %r (id %s) failed: %r; restart #%d in %.3f s",
                        self.name, fiber.id, self.last_error, self.restarts + 1, delay)
        self.restarts += 1
        self.runtime.supervisor_restarts += 1
        self.status = "backoff"
        self.next_start = self.runtime.clock.monotonic() + delay
        self._timer = self.runtime.clock.call_later(delay, self._spawn)

    def _finish(self, status):
        self.status = status
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.next_start = None
        self.runtime._supervisors.pop(id(self), None)
        self._done.set()

    def cancel(self):
        """Stop supervising for good and cancel the current incarnation. Never blocks."""
        if self._done.is_set():
            return
        fiber = self.fiber
        self._finish("cancelled")
        if fiber is not None:
            fiber.cancel()

    def join(self, timeout=None):
        """Wait until supervision ends; return the last clean result.

        Raises the last error when a "never" fiber failed, FiberCancelled when supervision
        was cancelled, FiberTimeout when `timeout` (clock seconds) passes first.
        """
        if not self._done.is_set():
            if timeout is not None and timeout <= 0:
                raise FiberTimeout(f"supervised fiber {self.name!r} is still supervised")
            wait_ready(self._done, self.runtime.clock, timeout)
            if not self._done.is_set():
                raise FiberTimeout(f"supervised fiber {self.name!r} still supervised after {timeout} s")
        if self.status == "cancelled":
            raise FiberCancelled(f"supervision of {self.name!r} was cancelled")
        if self.status == "failed":
            raise self.last_error
        return self.result
