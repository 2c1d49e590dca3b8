"""The query helpers shared by a pool (a connection per call) and a transaction (one
connection): execute, execute_many, fetch_one, fetch_all, fetch_val, copy_in, copy_out,
pipeline, notify. Rows come back as dicts."""
from psycopg import sql
from psycopg.rows import dict_row


class Queries:
    """The query helpers, shared by the pool (a connection per call) and Tx (one connection).

    Subclasses provide _run(fn): call fn(conn) and translate psycopg errors. conn is a
    fiberapp.db.pg_wait.GeventConnection: the one-statement helpers reuse its
    helper_cursor() instead of building a cursor per call (see there why).
    """

    def execute(self, query, params=None):
        """Run one statement; returns the number of rows it affected (-1 if none apply)."""
        return self._run(lambda conn: conn.helper_cursor().execute(query, params).rowcount)

    def execute_many(self, query, params_seq):
        """Run one statement once per parameter set (pipelined by psycopg); returns the
        total rows affected."""

        def run(conn):
            with conn.cursor() as cur:
                cur.executemany(query, params_seq)
                return cur.rowcount

        return self._run(run)

    def fetch_one(self, query, params=None):
        """The first row as a dict, or None."""

        def run(conn):
            return conn.helper_cursor(dict_row).execute(query, params).fetchone()

        return self._run(run)

    def fetch_all(self, query, params=None):
        """Every row, as a list of dicts."""

        def run(conn):
            return conn.helper_cursor(dict_row).execute(query, params).fetchall()

        return self._run(run)

    def fetch_val(self, query, params=None):
        """The first column of the first row, or None when there is no row."""

        def run(conn):
            row = conn.helper_cursor().execute(query, params).fetchone()
            return None if row is None else row[0]

        return self._run(run)

    def copy_in(self, table, rows, columns=None):
        """COPY rows (an iterable of sequences) into table ("name" or "schema.name");
        returns the number of rows written. Names are quoted as identifiers."""
        target = sql.Identifier(*table.split("."))
        if columns:
            target = sql.SQL("{} ({})").format(target, sql.SQL(", ").join(map(sql.Identifier, columns)))
        statement = sql.SQL("COPY {} FROM STDIN").format(target)

        def run(conn):
            count = 0
            with conn.cursor() as cur, cur.copy(statement) as copy:
                for row in rows:
                    copy.write_row(row)
                    count += 1
            return count

        return self._run(run)

    def copy_out(self, query, params=None, write=None):
        """COPY (query) TO STDOUT. Without write: returns the rows as tuples of text
        (None for NULL). With write: streams the text-format data to write(bytes) chunk
        by chunk and returns the number of bytes, so large results never sit in memory."""
        statement = sql.SQL("COPY ({}) TO STDOUT").format(sql.SQL(query))

        def run(conn):
            with conn.cursor() as cur, cur.copy(statement, params) as copy:
                if write is None:
                    return list(copy.rows())
                size = 0
                for chunk in copy:
                    write(bytes(chunk))
                    size += len(chunk)
                return size

        return self._run(run)

    def pipeline(self, statements):
        """Send [(query, params), ...] in one round trip (pipeline mode), atomically (in a
        transaction, or a savepoint inside transaction()). Returns, per statement, its
        rows (list of dicts) if it returns rows, else its row count."""
        statements = [(s, None) if isinstance(s, str) else (s[0], s[1]) for s in statements]

        def run(conn):
            cursors = []
            with conn.transaction(), conn.pipeline():
                for query, params in statements:
                    cur = conn.cursor(row_factory=dict_row)
                    cur.execute(query, params)
                    cursors.append(cur)
            out = [cur.fetchall() if cur.description is not None else cur.rowcount for cur in cursors]
            for cur in cursors:
                cur.close()
            return out

        return self._run(run)

    def notify(self, channel, payload=""):
        """NOTIFY channel with payload (delivered at commit when inside a transaction)."""
        self._run(lambda conn: conn.helper_cursor().execute("SELECT pg_notify(%s, %s)", (channel, payload)))
