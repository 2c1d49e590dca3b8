"""The runtime's exceptions: the root of fiberapp's typed errors and the control-flow signals.

Errors (things that went wrong) derive from FiberappError, so `except FiberappError`
catches every fiberapp failure and nothing else. Cancellation is not an error: it is a
signal that derives from BaseException (through gevent's GreenletExit), so a stray
`except Exception:` in user code cannot swallow it, and gevent treats a cancelled fiber
as one that ended on purpose (no traceback printed).
"""
from greenlet import GreenletExit


class FiberappError(Exception):
    """Root of every typed error fiberapp raises."""


class FiberTimeout(FiberappError):
    """A wait with a timeout (Fiber.join, Supervisor.join, ...) ran out of time.

    Only the waiter gives up; the fiber waited on keeps running.
    """


class FiberCancelled(FiberappError):
    """Raised by join() in the *joiner* when the fiber it joined was cancelled.

    Kept apart from Cancelled on purpose: re-raising Cancelled (a BaseException) in the
    joiner would silently end the joiner as if it had been cancelled itself.
    """


class FiberError(FiberappError):
    """Misuse of a fiber (a fiber joining itself, a bad name, ...)."""


class Cancelled(GreenletExit):
    """Delivered to a cancelled fiber at its next yield (sleep, channel wait, I/O, ...).

    Catching it does not un-cancel the fiber: Runtime.sleep()/testcancel() raise it again.
    """
