"""History: order events to PostgreSQL in batches, from a fiber, through a durable tube.

A request never touches PostgreSQL: ``record(order, event)`` puts one task into the
``<prefix>_history`` tube (fifo) and returns. The writer fiber takes up to ``batch``
tasks at a time (when fewer are there, it waits ``linger`` seconds for more, unless a
``flush`` is waiting) and writes them in one transaction: the touched orders' rows first
(upserted, newest wins, so the events' foreign key holds), then the events. Only after
the commit are the tasks acked. When PostgreSQL is down the tasks are released (they keep
their order: fifo by id) and the writer waits, with a doubling backoff, and tries again:
events pile up in the tube, which the WAL makes durable, and none is lost.

No duplicates, even when a commit's answer is lost (the connection died after COMMIT was
sent) or the process dies between commit and ack: every event carries an id assigned
here, written into taxi_order_events.id with ON CONFLICT DO NOTHING, so writing a batch
twice stores it once. Ids are seeded at start above both the table's highest id and any
id still waiting in the tube (``seed``). Contract: nothing else inserts into
taxi_order_events without an explicit id.
"""
import logging

from deploy.taxi import sql
from fiberapp.db.errors import DbError
from fiberapp.runtime.sync import Cond
from queues.errors import QueueError
from queues.states import TAKEN

SESSION = "taxi.history"

# One statement per batch, each column one array (see sql.UPSERT_ORDERS).
INSERT_EVENTS_WITH_ID = """
INSERT INTO taxi_order_events (id, order_id, from_state, to_state, at, driver, reason)
SELECT id, order_id, from_state, to_state, to_timestamp(at), driver, reason
  FROM unnest(%s::bigint[], %s::bigint[], %s::text[], %s::text[], %s::float8[], %s::text[], %s::text[])
       AS t(id, order_id, from_state, to_state, at, driver, reason)
ON CONFLICT (id) DO NOTHING
"""
MAX_EVENT_ID = "SELECT coalesce(max(id), 0) FROM taxi_order_events"
MAX_BACKOFF = 30.0


class HistoryWriter:
    def __init__(self, store, pg, clock, settings, log=None):
        self.pg, self.clock, self.settings = pg, clock, settings
        self.log = log or logging.getLogger("taxi.history")
        self.tube = store.create_tube(settings.tube("history"), "fifo", if_not_exists=True)
        self.next_id = 1
        self.recorded = 0     # events recorded by this process
        self.written = 0      # events committed by this process
        self.batches = 0
        self.failures = 0
        self.last_error = None
        self._written_upto = 0  # highest event id committed (the tube is fifo: in order)
        self._progress = Cond(clock=clock)
        self._hurry = Cond(clock=clock)  # flush() cuts the writer's linger short

    # -- start-up --------------------------------------------------------------------------

    def seed(self):
        """Apply the schema if missing and set the event id counter; returns the highest
        order id known (PostgreSQL or still in the tube), for the OrderBook's next id.
        Needs PostgreSQL (raises DbError when it is down)."""
        with self.pg.connection() as conn:
            sql.apply_schema(conn)
        max_event = self.pg.fetch_val(MAX_EVENT_ID) or 0
        max_order = self.pg.fetch_val(sql.MAX_ORDER_ID) or 0
        waiting = [task.data for task in self.tube.tasks(limit=None)]
        for event_id, row, _ in waiting:
            max_event = max(max_event, event_id)
            max_order = max(max_order, row[0])
        self.next_id = max_event + 1
        self._written_upto = min(r[0] for r in waiting) - 1 if waiting else max_event
        return max_order

    def pending_rows(self):
        """The newest order row of every order with events still waiting, oldest first
        (recovery overlays these on what PostgreSQL has)."""
        rows = {}
        for task in self.tube.tasks(limit=None):
            rows[task.data[1][0]] = task.data[1]
        return list(rows.values())

    # -- the request path ------------------------------------------------------------------

    def record(self, order, event):
        """Queue one event (with the order's row as of that event). Never blocks on
        PostgreSQL; raises QueueError only if the store refuses the put."""
        event_id = self.next_id
        self.next_id += 1
        self.tube.put([event_id, list(order.to_row()), list(event)])
        self.recorded += 1

    def pending(self):
        return self.tube.statistics()["tasks"]["total"]

    def flush(self, timeout):
        """Wait until every event recorded before the call is committed; returns True if
        that happened within ``timeout`` seconds."""
        target = self.next_id - 1
        deadline = self.clock.monotonic() + timeout
        self._hurry.broadcast()
        while self._written_upto < target and self.pending():
            left = deadline - self.clock.monotonic()
            if left <= 0 or not self._progress.wait(left):
                return self._written_upto >= target or not self.pending()
        return True

    def wait_outcome(self, timeout):
        """Wait for the next batch to be written or to fail; False if neither came."""
        return self._progress.wait(timeout)

    def stats(self):
        return {"recorded": self.recorded, "written": self.written, "pending": self.pending(),
                "batches": self.batches, "failures": self.failures, "last_error": self.last_error}

    # -- the writer fiber ------------------------------------------------------------------

    def run(self):
        """Supervised: take batches, write them, ack them; on failure back off and retry."""
        for task in self.tube.tasks(state=TAKEN, limit=None):  # a previous incarnation's
            if task.session == SESSION:
                self.tube.release(task.id, session=SESSION)
        backoff = self.settings.history_backoff
        batch, linger = self.settings.history_batch, self.settings.history_linger
        while True:
            tasks = self.tube.take_many(batch, timeout=5.0, session=SESSION)
            if not tasks:
                continue
            if len(tasks) < batch:
                # Let a batch gather: one transaction per event or two cost the server
                # ~15 % of its core at 20 orders/s (3,130 transactions for 4,492 events).
                self._hurry.wait(linger)
                tasks += self.tube.take_many(batch - len(tasks), timeout=0, session=SESSION)
            if self.write_batch(tasks):
                backoff = self.settings.history_backoff
            else:
                self.clock.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    def write_batch(self, tasks):
        """Write taken tasks in one transaction; ack them (True) or release them (False)."""
        records = [task.data for task in tasks]
        try:
            self.write(records)
        except DbError as exc:
            self.failures += 1
            self.last_error = str(exc)
            self.log.warning("history: %d event(s) wait for PostgreSQL: %s", len(tasks), exc)
            for task in tasks:
                self._give_back(task)
            self._progress.broadcast()
            return False
        for task in tasks:
            try:
                self.tube.ack(task.id, session=SESSION)
            except QueueError:  # acked rows are in PostgreSQL; a lost ack only rewrites them
                self.log.exception("history: ack of event task %d failed", task.id)
        self.written += len(tasks)
        self.batches += 1
        self._written_upto = max(self._written_upto, max(r[0] for r in records))
        self._progress.broadcast()
        return True

    def write(self, records):
        """One transaction: upsert each touched order (its newest row), insert the events."""
        orders = {}
        for _, row, _ in records:
            orders[row[0]] = row  # fifo: a later record is a newer row
        events = [(event_id, *event) for event_id, _, event in records]
        with self.pg.transaction() as tx:
            tx.execute(sql.UPSERT_ORDERS, _columns(orders.values(), 11))
            tx.execute(INSERT_EVENTS_WITH_ID, _columns(events, 7))

    def _give_back(self, task):
        try:
            self.tube.release(task.id, session=SESSION)
        except QueueError:
            self.log.exception("history: release of event task %d failed", task.id)


def _columns(rows, width):
    """Rows -> one list per column (the arrays the batch statements unnest)."""
    cols = [[] for _ in range(width)]
    for row in rows:
        for col, value in zip(cols, row):
            col.append(value)
    return cols
