"""The API's typed errors and the one table mapping errors to HTTP statuses.

Every error a client can provoke ends up here as (status, code, message), rendered as
``{"error": {"code": "snake_case", "message": "..."}}``. Two families meet:

- ApiError (a FiberappError): raised by the API layer itself - bad JSON, a bad or unknown
  field, a missing token, a bad session header. Each subclass carries its status and code.
- QueueError (queues.errors): raised by the store. Each carries a stable snake_case
  ``code``; STATUS_BY_CODE below decides its status. The store's own ``http_status`` hint
  is used only for a code this table does not know yet, and 409 is the last resort: a
  queue refusing an operation is a conflict with its state, never a server fault.

Anything else escaping a handler is a bug in fiberapp, not the client's doing, and the
HTTP server answers it with a 500.
"""
from fiberapp.runtime.errors import FiberappError


class ApiError(FiberappError):
    """An error answered to the client: ``status`` and ``code`` are class attributes."""

    status = 400
    code = "bad_request"

    headers = None

    def __init__(self, message, *, code=None, status=None, headers=None):
        super().__init__(message)
        self.message = message
        self.headers = headers
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class InvalidJson(ApiError):
    code = "invalid_json"


class InvalidField(ApiError):
    """A field with the wrong type or out of range; ``field`` names it."""

    code = "invalid_field"

    def __init__(self, field, message):
        super().__init__(f"{field}: {message}")
        self.field = field


class UnknownField(ApiError):
    code = "unknown_field"

    def __init__(self, field):
        super().__init__(f"unknown field {field!r}")
        self.field = field


class MissingField(ApiError):
    code = "missing_field"

    def __init__(self, field):
        super().__init__(f"missing required field {field!r}")
        self.field = field


class InvalidSession(ApiError):
    code = "invalid_session"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Unavailable(ApiError):
    status = 503
    code = "unavailable"


class InsecureBind(FiberappError):
    """Refusal to serve the API on a non-loopback address without a token (a start-up error)."""


# QueueError code -> HTTP status. The codes are the queue store's (queues/errors.py);
# keep this table the only place that decides them.
STATUS_BY_CODE = {
    "invalid_name": 400,
    "invalid_option": 400,
    "invalid_argument": 400,
    "invalid_data": 400,
    "no_such_tube": 404,
    "no_such_task": 404,
    "no_such_driver": 400,
    "unknown_driver": 400,
    "wrong_state": 409,
    "not_owner": 409,
    "tube_exists": 409,
    "tube_busy": 409,
    "tube_full": 503,
    "unsupported": 400,
    "no_such_session": 404,
    "store_stopped": 503,
    "task_too_large": 413,
    "draining": 503,
    "wal_error": 503,
    "disk_full": 503,
}


# QueueError subclasses that carry no code of their own (queues.persist's) are known by
# class name, nearest first in the MRO; the code is then the class name in snake_case.
STATUS_BY_CLASS = {
    "WalDiskFull": 503,
    "WalIOError": 503,
    "WalClosed": 503,
    "WalError": 503,
    "SnapshotError": 503,
    "RecoveryError": 503,
    "DataDirLocked": 503,
}


def status_and_code(exc):
    """(status, code, message) for an error a handler raised, or None if it is not ours."""
    if isinstance(exc, ApiError):
        return exc.status, exc.code, exc.message
    if not _is_queue_error(exc):
        return None
    code = getattr(exc, "code", None)
    status = STATUS_BY_CODE.get(code)
    if status is None:
        for cls in type(exc).__mro__:
            if cls.__name__ in STATUS_BY_CLASS:
                if "code" not in type(exc).__dict__:
                    code = _snake(type(exc).__name__)
                status = STATUS_BY_CLASS[cls.__name__]
                break
    if status is None:
        # A code this table does not know yet: the store's hint, else 409 (a refusal).
        status = getattr(exc, "http_status", None) or 409
    return int(status), code, str(exc) or code


def _snake(name):
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and (not name[i - 1].isupper() or (i + 1 < len(name) and name[i + 1].islower())):
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def _is_queue_error(exc):
    # Imported lazily: the API maps the store's errors, it does not own them.
    try:
        from queues.errors import QueueError
    except ImportError:  # pragma: no cover - the store is part of this distribution
        return False
    return isinstance(exc, QueueError)
