"""LISTEN in a supervised fiber: PgPool.listen() builds one of these.

The listener holds its own autocommit connection, outside the pool: a LISTENing
session must stay open for as long as the subscription lives, and borrowing a pool slot
for that would shrink the pool silently. When the connection fails, the supervisor loop
(fiberapp.db.supervise) reconnects with backoff and LISTENs again; notifications sent
meanwhile are lost (PostgreSQL keeps none for absent listeners).
"""
from psycopg import sql

from fiberapp.db.pg_wait import GeventConnection
from fiberapp.db.supervise import Subscriber


class PgListener(Subscriber):
    kind = "pg listener"
    # While no notification arrives, a SELECT 1 this often notices a dead connection.
    idle_check = 5.0

    def __init__(self, pool, channels, callback=None, channel=None):
        if not channels or not all(isinstance(c, str) and c for c in channels):
            raise ValueError("listen() needs one or more channel names")
        super().__init__(pool.runtime, f"pg-listen:{pool.name}:{','.join(channels)}"[:200], callback, channel)
        self.pool = pool
        self.channels = tuple(channels)

    def session(self):
        # GeventConnection: an idle listener sleeps on its socket instead of waking
        # every 100 ms in psycopg's poll loop.
        conn = GeventConnection.connect(self.pool.conninfo, autocommit=True)
        try:
            for name in self.channels:
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(name)))
            self.mark_ready()
            while True:
                idle = True
                for notify in conn.notifies(timeout=self.idle_check):
                    idle = False
                    self.deliver(notify)
                if idle:
                    conn.execute("SELECT 1")
        finally:
            conn.close()
