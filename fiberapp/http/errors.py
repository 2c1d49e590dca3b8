"""Typed errors of the HTTP edge, and the table that maps exceptions to statuses.

Every error here derives from FiberappError (the package root). HTTPError carries the
status it stands for, so a handler (or the router) can ``raise NotFound("no such tube")``
and the client gets a 404 with a JSON body, never a 500.

ErrorMap is the one table from exception class to HTTP status: the API layer registers
its own classes (QueueError subclasses, say) once, and the router consults it for every
exception a handler lets escape. Lookup walks the exception's MRO, so registering a base
class covers its subclasses, and a more specific registration wins.
"""
from fiberapp.runtime.errors import Cancelled, FiberappError


class HTTPError(FiberappError):
    """An error with an HTTP status. ``code`` is a short machine-readable tag."""

    status = 500
    code = "internal_error"

    def __init__(self, message=None, *, status=None, code=None, headers=None):
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.message = message if message is not None else self.code.replace("_", " ")
        self.headers = headers or ()
        super().__init__(self.message)


class BadRequest(HTTPError):
    status = 400
    code = "bad_request"


class NotFound(HTTPError):
    status = 404
    code = "not_found"


class MethodNotAllowed(HTTPError):
    status = 405
    code = "method_not_allowed"

    def __init__(self, allow, message=None):
        self.allow = tuple(sorted(allow))
        super().__init__(message, headers=(("Allow", ", ".join(self.allow)),))


class PayloadTooLarge(HTTPError):
    status = 413
    code = "payload_too_large"


class HeaderFieldsTooLarge(HTTPError):
    status = 431
    code = "request_header_fields_too_large"


class RouteError(FiberappError):
    """A route definition is wrong (bad pattern, unknown type) or clashes with another."""


class ClientDisconnected(Cancelled):
    """Thrown into a handler's fiber when its client hangs up (see Request.cancel_on_disconnect).

    It is a cancellation (the runtime's Cancelled, a BaseException), so a stray
    ``except Exception`` in the handler cannot swallow it.
    """


class HTTPClientError(FiberappError):
    """Root of the HTTP client's errors."""


class HTTPClientTimeout(HTTPClientError):
    """Connecting, sending or receiving took longer than the configured timeout."""


class HTTPClientConnectionError(HTTPClientError):
    """The connection could not be made or broke (refused, reset, closed early)."""


class ErrorMap:
    """Exception class -> (status, code). The router's single source of error statuses."""

    def __init__(self):
        self._table = {}
        self._cache = {}

    def register(self, exc_class, status, code=None):
        if not (isinstance(exc_class, type) and issubclass(exc_class, BaseException)):
            raise TypeError(f"{exc_class!r} is not an exception class")
        if not 400 <= int(status) <= 599:
            raise ValueError(f"status {status} is not an error status")
        self._table[exc_class] = (int(status), code or _snake(exc_class.__name__))
        self._cache.clear()

    def lookup(self, exc):
        """(status, code) for exc, or None when nothing covers it (an unexpected error)."""
        if isinstance(exc, HTTPError):
            return exc.status, exc.code
        cls = type(exc)
        try:
            return self._cache[cls]
        except KeyError:
            pass
        found = None
        for base in cls.__mro__:
            if base in self._table:
                found = self._table[base]
                break
        self._cache[cls] = found
        return found


def _snake(name):
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and not name[i - 1].isupper():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)
