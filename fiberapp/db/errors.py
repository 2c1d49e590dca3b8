"""The typed errors of fiberapp.db.

Every failure of a PostgreSQL or Redis call surfaces as one of these (the driver's own
exception is chained as __cause__), so fiber scripts and the HTTP error table deal with
one small hierarchy instead of psycopg's and redis-py's:

    DbError
    ├── DbConfigError          a config value is wrong (.key names it)
    ├── DbClosed               the pool/client is not open
    ├── DbUnavailable          cannot connect, or the connection died under a call
    ├── DbTimeout
    │   ├── PoolExhausted      no free connection within max_wait
    │   └── QueryTimeout       statement_timeout (PostgreSQL) / socket_timeout (Redis)
    └── QueryError             the server refused the command (.sqlstate for PostgreSQL)
        └── TransactionConflict  serialization failure or deadlock: safe to retry

Suggested HTTP statuses: DbUnavailable, PoolExhausted -> 503; QueryTimeout -> 504;
QueryError -> 500 (a script bug or bad data); DbConfigError never reaches a request.
"""
from fiberapp.runtime.errors import FiberappError


class DbError(FiberappError):
    """Root of every PostgreSQL/Redis wrapper error."""


class DbConfigError(DbError):
    """A [pg] or [redis] config value is missing or wrong; .key is the dotted key."""

    def __init__(self, key, message):
        self.key = key
        super().__init__(f"{key}: {message}")


class DbClosed(DbError):
    """The pool or client was used before open() or after close()."""


class DbUnavailable(DbError):
    """The server cannot be reached, or the connection was lost during the call.

    If the connection died after the command was sent, the command may or may not have
    run: fiberapp never retries it for you (except Redis' own idempotent reconnect at
    checkout), because only the caller knows whether it is safe to repeat.
    """


class DbTimeout(DbError):
    """Something took longer than its configured limit."""


class PoolExhausted(DbTimeout):
    """No connection became free within max_wait: the pool is too small for the load."""


class QueryTimeout(DbTimeout):
    """The server cancelled the command (statement_timeout) or the socket timed out."""


class QueryError(DbError):
    """The server refused the command. .sqlstate holds PostgreSQL's SQLSTATE (or None)."""

    def __init__(self, message, sqlstate=None):
        self.sqlstate = sqlstate
        super().__init__(message)


class TransactionConflict(QueryError):
    """Serialization failure (40001) or deadlock (40P01): the transaction was rolled back
    and may be retried as a whole (PgPool.transaction() iterates attempts for you)."""
