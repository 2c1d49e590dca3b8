"""Transactions: PgPool.transaction() returns a Transaction, usable as a context manager
(one attempt) or as an iterator of attempts (retried on serialization failure/deadlock)."""
import random

import psycopg

from fiberapp.db.errors import TransactionConflict
from fiberapp.db.pg_queries import Queries

_ISOLATION = {
    None: "",
    "read committed": " ISOLATION LEVEL READ COMMITTED",
    "repeatable read": " ISOLATION LEVEL REPEATABLE READ",
    "serializable": " ISOLATION LEVEL SERIALIZABLE",
}


class Tx(Queries):
    """One transaction's connection: the helpers, plus .conn for raw psycopg use."""

    def __init__(self, conn, pool):
        self.conn = conn
        self._pool = pool

    def _run(self, fn):
        try:
            return fn(self.conn)
        except psycopg.Error as exc:
            raise self._pool._translate(exc, self.conn) from exc


class _Attempt:
    """One try of a retried transaction: `with attempt as tx:`."""

    def __init__(self, pool, begin, last):
        self._cm = pool._transaction(begin)
        self._last = last
        self.succeeded = False
        self.conflict = None

    def __enter__(self):
        return self._cm.__enter__()

    def __exit__(self, et, ev, tb):
        try:
            suppressed = self._cm.__exit__(et, ev, tb)
        except TransactionConflict as exc:  # raised on the way out, e.g. by COMMIT
            if self._last:
                raise
            self.conflict = exc
            return True
        if et is None:
            self.succeeded = True
            return False
        if isinstance(ev, TransactionConflict) and not self._last:
            self.conflict = ev
            return True
        return suppressed


class Transaction:
    """transaction(): use it either way.

        with pool.transaction() as tx:         # one attempt; TransactionConflict if lost
            tx.execute(...)

        for attempt in pool.transaction():     # retried on serialization failure/deadlock
            with attempt as tx:
                tx.execute(...)

    A `with` block cannot re-run itself, hence the loop form for retries. Between
    attempts it sleeps a jittered, doubling backoff; after the last attempt the
    TransactionConflict propagates. Any other error ends the loop at once.
    """

    def __init__(self, pool, isolation, read_only, attempts):
        if isolation not in _ISOLATION:
            raise ValueError(f"isolation must be one of {sorted(k for k in _ISOLATION if k)}, got {isolation!r}")
        if attempts < 1:
            raise ValueError("attempts must be >= 1")
        self._pool = pool
        self._begin = "BEGIN" + _ISOLATION[isolation] + (" READ ONLY" if read_only else "")
        self._attempts = attempts
        self._single = None

    def __enter__(self):
        self._single = self._pool._transaction(self._begin)
        return self._single.__enter__()

    def __exit__(self, et, ev, tb):
        single, self._single = self._single, None
        return single.__exit__(et, ev, tb)

    def __iter__(self):
        for number in range(1, self._attempts + 1):
            attempt = _Attempt(self._pool, self._begin, last=number == self._attempts)
            yield attempt
            if attempt.conflict is None:
                return
            self._pool.conflicts += 1
            delay = random.uniform(0, min(0.5, 0.005 * 2**number))
            self._pool.runtime.clock.sleep(delay)
