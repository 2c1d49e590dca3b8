"""PostgreSQL for fiber scripts: a psycopg_pool.ConnectionPool under the patched runtime.

psycopg 3 waits in Python; once gevent has patched `select` (patch_all() before psycopg
is imported) every query yields to the loop, and the pool's workers are greenlets. On
top of the pool this module adds what scripts need and nothing else:

- config validation ([pg] dsn, min_size, max_size, statement_timeout, connect_timeout,
  max_wait, application_name, health_interval) and several named pools;
- helpers (execute, execute_many, fetch_one, fetch_all, fetch_val, copy_in, copy_out,
  pipeline), rows as dicts;
- transaction(): a context manager for one attempt, and an iterator of attempts that
  retries serialization failures and deadlocks;
- typed errors (fiberapp.db.errors) for every failure, and health() for /health.

Contracts:
- Timeouts are server-side: statement_timeout is sent in the startup packet. A query is
  never interrupted by gevent.Timeout, which would leave the connection mid-protocol.
- Connections are autocommit: a helper call is its own transaction unless it runs
  inside transaction().
- No query is ever retried automatically after the connection died under it (it may have
  run); only whole transactions that the server rolled back (TransactionConflict) are.
- When the database goes away, calls fail with DbUnavailable (after at most max_wait),
  psycopg_pool reconnects in the background with exponential backoff, health() reports
  "degraded" until a call succeeds again; nothing here blocks the loop.
"""
import contextlib
import logging
import math
import time

import gevent
import gevent.lock
import psycopg
import psycopg.conninfo
import psycopg.errors
import psycopg_pool
from psycopg.pq import TransactionStatus

from fiberapp.db.errors import (
    DbClosed,
    DbConfigError,
    DbUnavailable,
    PoolExhausted,
    QueryError,
    QueryTimeout,
    TransactionConflict,
)
from fiberapp.db.pg_queries import Queries
from fiberapp.db.pg_transaction import Transaction, Tx
from fiberapp.db.pg_wait import GeventConnection
from fiberapp.db.settings import Section

log = logging.getLogger(__name__)

_CONFLICTS = (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected)
# SQLSTATEs that mean "this session is gone": connection exceptions (08xxx) and
# admin/crash shutdowns (57P01..57P03), e.g. pg_terminate_backend().
_GONE_STATES = ("57P01", "57P02", "57P03")


def _assert_cooperative():
    """psycopg picks its wait function at import: imported before patching it blocks the
    loop on every query. Fail loudly instead of serving with a stalled loop."""
    from gevent import monkey

    import psycopg.waiting as waiting

    wait_c = getattr(waiting, "wait_c", None)
    if monkey.is_module_patched("select") and wait_c is not None and waiting.wait is wait_c:
        raise DbConfigError("pg", "psycopg was imported before gevent patching; queries would block the loop")


class PgPool(Queries):
    """A pool of PostgreSQL connections. Build with from_config(), then open()."""

    @classmethod
    def from_config(cls, section, runtime, name="default"):
        """Build one pool from a [pg] table. Sub-tables (named pools) are ignored here;
        see pools_from_config()."""
        s = Section(section, "pg" if name == "default" else f"pg.{name}")
        dsn = s.string("dsn")
        min_size = s.integer("min_size", 1, minimum=0)
        max_size = s.integer("max_size", 10, minimum=1)
        if max_size < min_size:
            raise DbConfigError(f"{s.prefix}.max_size", f"must be >= min_size ({min_size}), got {max_size}")
        pool = cls(
            dsn,
            runtime=runtime,
            name=name,
            min_size=min_size,
            max_size=max_size,
            statement_timeout=s.seconds("statement_timeout", 30.0, allow_zero=True),
            connect_timeout=s.seconds("connect_timeout", 5.0),
            max_wait=s.seconds("max_wait", 5.0),
            application_name=s.string("application_name", f"fiberapp:{name}"),
            health_interval=s.seconds("health_interval", 0, allow_zero=True),
        )
        s.done(ignore_tables=True)
        return pool

    @classmethod
    def pools_from_config(cls, section, runtime):
        """{"default": pool, name: pool, ...} from a [pg] table whose sub-tables
        ([pg.reports] ...) are named pools. A named pool inherits every scalar key of
        [pg] (dsn included) that it does not set itself."""
        if not isinstance(section, dict):
            raise DbConfigError("pg", f"must be a table, got {type(section).__name__}")
        base = {k: v for k, v in section.items() if not isinstance(v, dict)}
        pools = {"default": cls.from_config(base, runtime)}
        for name, sub in section.items():
            if isinstance(sub, dict):
                pools[name] = cls.from_config({**base, **sub}, runtime, name=name)
        return pools

    def __init__(
        self,
        dsn,
        *,
        runtime,
        name="default",
        min_size=1,
        max_size=10,
        statement_timeout=30.0,
        connect_timeout=5.0,
        max_wait=5.0,
        application_name=None,
        health_interval=0.0,
    ):
        try:
            params = psycopg.conninfo.conninfo_to_dict(dsn)
        except psycopg.Error as exc:
            raise DbConfigError("pg.dsn", f"not a valid connection string: {exc}") from None
        options = params.get("options") or ""
        if statement_timeout:
            options = f"{options} -c statement_timeout={max(1, round(statement_timeout * 1000))}".strip()
        if options:
            params["options"] = options
        params["application_name"] = application_name or f"fiberapp:{name}"
        # libpq counts connect_timeout in whole seconds.
        params["connect_timeout"] = max(1, math.ceil(connect_timeout))
        self.conninfo = psycopg.conninfo.make_conninfo(**params)
        self.runtime = runtime
        self.name = name
        self.min_size = min_size
        self.max_size = max_size
        self.max_wait = max_wait
        self.statement_timeout = statement_timeout
        self.connect_timeout = connect_timeout
        self.application_name = params["application_name"]
        self.health_interval = health_interval
        self.conflicts = 0
        self._pool = None
        self._slots = None
        self._connect_error = None  # the last failed connect, until one succeeds
        self._failure = None  # the last DbUnavailable, until a call succeeds
        self._watch = None
        self._listeners = []

    # -- lifecycle -------------------------------------------------------------------------

    def open(self, wait=False, timeout=None):
        """Start the pool. wait=True blocks (this fiber only) until min_size connections
        are up, raising DbUnavailable after timeout (default connect_timeout + max_wait).
        wait=False returns at once; a database that is down shows in health()."""
        if self._pool is not None:
            return self
        _assert_cooperative()
        owner = self

        class _TrackedConnection(GeventConnection):
            # The pool reconnects in its own workers; this is how health() learns
            # whether those attempts fail, without parsing the pool's log. Queries wait
            # on gevent's loop directly (pg_wait: about a sixth fewer instructions per
            # query than psycopg's wait_poll over the patched select.poll).
            @classmethod
            def connect(cls, *args, **kwargs):
                try:
                    conn = super().connect(*args, **kwargs)
                except Exception as exc:
                    owner._connect_error = exc
                    raise
                owner._connect_error = None
                return conn

        self._pool = psycopg_pool.ConnectionPool(
            self.conninfo,
            connection_class=_TrackedConnection,
            kwargs={"autocommit": True},
            min_size=self.min_size,
            max_size=self.max_size,
            timeout=self.max_wait,
            name=f"fiberapp:{self.name}",
            open=False,
        )
        self._slots = gevent.lock.BoundedSemaphore(self.max_size)
        try:
            self._pool.open(wait=wait, timeout=timeout if timeout is not None else self.connect_timeout + self.max_wait)
        except psycopg_pool.PoolTimeout as exc:
            pool, self._pool = self._pool, None
            pool.close(timeout=0)
            raise DbUnavailable(f"pg pool {self.name!r}: could not open: {self._connect_error or exc}") from exc
        if self.health_interval:
            self._watch = self.runtime.spawn(self._watch_loop, name=f"pg-health:{self.name}")
        return self

    def close(self, timeout=5.0):
        """Stop the listeners, close every connection; calls made afterwards raise
        DbClosed. Idempotent."""
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener.stop(timeout)
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
            gevent.joinall([watch], timeout=timeout)
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close(timeout=timeout)

    @property
    def is_open(self):
        return self._pool is not None

    def health(self):
        """{"status": "ok"|"degraded", ...}; never blocks. "degraded" while closed, while
        the pool's reconnect attempts fail, since a call failed with DbUnavailable and
        none has succeeded yet, or while a listener is (re)connecting."""
        if self._pool is None:
            return {"status": "degraded", "name": self.name, "error": "closed"}
        stats = self._pool.get_stats()
        problem = self._failure or self._connect_error
        self._listeners = [x for x in self._listeners if not x.stopped]
        down = sum(1 for x in self._listeners if not x.ready)
        return {
            "status": "ok" if problem is None and not down else "degraded",
            "name": self.name,
            "size": stats.get("pool_size", 0),
            "idle": stats.get("pool_available", 0),
            "waiting": stats.get("requests_waiting", 0),
            "max_size": self.max_size,
            "connection_errors": stats.get("connections_errors", 0),
            "connections_lost": stats.get("connections_lost", 0),
            "conflicts": self.conflicts,
            "listeners": len(self._listeners),
            "listeners_down": down,
            "error": None if problem is None else str(problem).strip(),
        }

    def ping(self):
        """SELECT 1 through the pool; True if it worked. Updates health()."""
        try:
            return self.fetch_val("SELECT 1") == 1
        except (DbUnavailable, PoolExhausted, QueryTimeout):
            return False

    def _watch_loop(self):
        # Without traffic nobody would notice the database going away; this fiber
        # pings every health_interval seconds so health() stays current.
        while True:
            self.runtime.clock.sleep(self.health_interval)
            self.ping()

    # -- calls -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def connection(self):
        """A pooled psycopg Connection (autocommit) for raw use; psycopg errors raised in
        the block come out translated to fiberapp.db errors."""
        pool, slots = self._pool, self._slots
        if pool is None:
            raise DbClosed(f"pg pool {self.name!r} is not open")
        # Fibers queue on a gevent semaphore (one slot per connection) rather than inside
        # psycopg_pool, whose Condition-based hand-over costs about a quarter more CPU per
        # query when fibers outnumber connections (bench/db.py). The pool then only waits
        # while it is growing or reconnecting.
        start = time.monotonic()
        if not slots.acquire(timeout=self.max_wait):
            raise self._translate(psycopg_pool.PoolTimeout("all connections busy"))
        conn = None
        try:
            left = max(self.max_wait - (time.monotonic() - start), min(self.max_wait, 1.0))
            # getconn/putconn rather than pool.connection(): that context manager adds
            # a generator frame, `with conn:` and a commit() that takes the connection's
            # lock and runs a wait even when the autocommit session is idle, on every
            # query. What it did is kept: an open transaction is committed after the
            # block and rolled back after an error (warning, never masking the error).
            conn = pool.getconn(timeout=left)
            try:
                try:
                    yield conn
                except BaseException:
                    if not conn.closed and conn.pgconn.transaction_status != TransactionStatus.IDLE:
                        try:
                            conn.rollback()
                        except Exception as exc2:
                            log.warning("error ignored in rollback on %s: %s", conn, exc2)
                    raise
                if not conn.closed and conn.pgconn.transaction_status != TransactionStatus.IDLE:
                    conn.commit()
            except psycopg.Error as exc:
                raise self._translate(exc, conn) from exc
            finally:
                pool.putconn(conn)
        except DbUnavailable as exc:
            self._failure = exc
            raise
        except (psycopg.Error, psycopg_pool.PoolClosed) as exc:  # checkout or return failed
            error = self._translate(exc, conn)
            if isinstance(error, DbUnavailable):
                self._failure = error
            raise error from exc
        finally:
            slots.release()
        self._failure = None

    def _run(self, fn):
        with self.connection() as conn:
            return fn(conn)

    def transaction(self, isolation=None, read_only=False, attempts=5):
        """See Transaction. isolation: None (server default), "read committed",
        "repeatable read" or "serializable"."""
        return Transaction(self, isolation, read_only, attempts)

    def run_transaction(self, fn, *args, isolation=None, read_only=False, attempts=5):
        """fn(tx, *args) in a transaction, retried on conflict; returns fn's result."""
        for attempt in self.transaction(isolation, read_only, attempts):
            with attempt as tx:
                result = fn(tx, *args)
        return result

    @contextlib.contextmanager
    def _transaction(self, begin):
        with self.connection() as conn:
            conn.execute(begin)
            try:
                yield Tx(conn, self)
            except BaseException:
                status = conn.pgconn.transaction_status
                if status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
                    conn.execute("ROLLBACK")
                # ACTIVE (interrupted mid-query) or UNKNOWN (dead): the pool discards it.
                raise
            conn.execute("COMMIT")

    def listen(self, *channels, callback=None, channel=None):
        """Start a supervised fiber LISTENing on channels; returns a started PgListener.
        Notifications (psycopg Notify: .channel, .payload, .pid) go to callback(n), or
        to a fiberapp Channel (.channel; one is made if neither is given)."""
        from fiberapp.db.pg_listen import PgListener

        if self._pool is None:
            raise DbClosed(f"pg pool {self.name!r} is not open")
        listener = PgListener(self, channels, callback=callback, channel=channel)
        self._listeners.append(listener)
        return listener.start()

    # -- errors ------------------------------------------------------------------------------

    def _translate(self, exc, conn=None):
        """psycopg/psycopg_pool exception -> fiberapp.db error (the caller chains it)."""
        name = self.name
        if isinstance(exc, psycopg_pool.PoolClosed):
            return DbClosed(f"pg pool {name!r} is closed")
        if isinstance(exc, (psycopg_pool.PoolTimeout, psycopg_pool.TooManyRequests)):
            if self._connect_error is not None:
                return DbUnavailable(f"pg pool {name!r}: cannot connect: {str(self._connect_error).strip()}")
            return PoolExhausted(
                f"pg pool {name!r}: no free connection within max_wait={self.max_wait}s (max_size={self.max_size})"
            )
        if isinstance(exc, psycopg.errors.QueryCanceled):
            return QueryTimeout(f"pg pool {name!r}: query cancelled (statement_timeout={self.statement_timeout}s): {exc}")
        if isinstance(exc, _CONFLICTS):
            return TransactionConflict(str(exc).strip(), exc.sqlstate)
        sqlstate = getattr(exc, "sqlstate", None)
        gone = conn is not None and (conn.closed or conn.broken)
        if (
            gone
            or (sqlstate and (sqlstate.startswith("08") or sqlstate in _GONE_STATES))
            or (isinstance(exc, psycopg.OperationalError) and sqlstate is None)
        ):
            return DbUnavailable(f"pg pool {name!r}: connection lost: {str(exc).strip()}")
        return QueryError(str(exc).strip(), sqlstate)
