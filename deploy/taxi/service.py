"""TaxiService: the taxi backend's operations, composed from its parts.

    geo index (drivers) + order book (state machine) + Dispatcher (tubes, offers)
    + HistoryWriter (events -> PostgreSQL)

The HTTP handlers (handlers.py) only parse and translate; everything a request can do is
a method here, so tests drive the backend in-process, under a FakeClock, without sockets.
Every operation checks that the store still takes work *before* it changes anything, so
a request that arrives while the server drains gets 503 and changes nothing.
"""
import collections
import logging

from deploy.taxi import orders as om
from deploy.taxi import sql
from deploy.taxi.dispatch import Dispatcher, Unavailable
from deploy.taxi.errors import BadRequest, UnknownOrder
from deploy.taxi.geo import GeoIndex
from deploy.taxi.history import HistoryWriter
from deploy.taxi.orders import Order, OrderBook
from fiberapp.db.errors import DbError
from queues.errors import QueueError

MAX_ID_LEN = 100
ORDER_ROW = """
SELECT id, client, from_lat, from_lon, to_lat, to_lon, state, driver, reason,
       extract(epoch FROM created_at)::float8 AS created_at,
       extract(epoch FROM updated_at)::float8 AS updated_at
  FROM taxi_orders WHERE id = %s
"""


class TaxiService:
    def __init__(self, store, pg, clock, settings, log=None):
        self.store, self.pg, self.clock, self.settings = store, pg, clock, settings
        self.log = log or logging.getLogger("taxi")
        self.geo = GeoIndex(offline_after=settings.offline_after)
        self.book = OrderBook()
        self.history = HistoryWriter(store, pg, clock, settings, log=self.log)
        self.dispatcher = Dispatcher(store, self.geo, self.book, clock, settings, self._emit, log=self.log)
        self._finished = collections.deque()  # (monotonic, order id) in finishing order
        self.forgotten = {om.COMPLETED: 0, om.CANCELLED: 0}

    # -- start-up --------------------------------------------------------------------------

    def start_up(self):
        """Apply the schema, seed ids, bring back the open orders. Needs PostgreSQL."""
        max_order = self.history.seed()
        rows = {row[0]: tuple(row) for row in self._fetch_open_rows()}
        for row in self.history.pending_rows():  # newer than what PostgreSQL has
            rows[row[0]] = tuple(row)
        self.book = OrderBook(next_id=max_order + 1)
        self.dispatcher.book = self.book
        queued = self.dispatcher.queued_work()
        restored = 0
        for row in sorted(rows.values(), key=lambda r: r[0]):
            if row[6] in om.OPEN_STATES:
                self._restore(row, queued)
                restored += 1
        return restored

    def _fetch_open_rows(self):
        with self.pg.connection() as conn:
            return conn.execute(sql.OPEN_ORDERS).fetchall()

    def _restore(self, row, queued):
        """Put an open order back in the book, and its work back in the tubes where the
        store's recovery did not already keep it (``queued``: Dispatcher.queued_work()).

        An order that was offered stays offered to that driver while its offer task is
        in the store: still queued in the driver's utube, the desk presents it; taken
        (presented) when the process stopped, recovery has handed it back as an orphan,
        which with max_attempts 1 lands in the expired tube, and the expiry records the
        order's ``expire`` as for any lapsed offer. So the history's chain of events stays
        connected (it used to jump from offered back to created with no event). With no
        offer task at all (the store kept nothing: wal_mode none) the offer lapses here,
        the same way. The declined-drivers memory is not kept across a restart."""
        oid, client, plat, plon, dlat, dlon, state, driver, reason, created, updated = row
        now, wall = self.clock.monotonic(), self.clock.time()
        order = Order(oid, client, (plat, plon), (dlat, dlon), float(created), now - (wall - float(created)))
        order.updated_at = float(updated)
        order.state, order.driver, order.reason = state, driver, reason
        self.book.restore(order)
        if state == om.OFFERED:
            if (driver, oid) in queued.offers:
                self.dispatcher.offering[driver] = oid
                return
            order, event = self.book.act(oid, "expire", driver=driver, wall=wall, mono=now)
            self._emit(order, event)
            state = order.state
        if state == om.CREATED and oid not in queued.dispatch:
            self.dispatcher.submit(oid)

    # -- drivers ---------------------------------------------------------------------------

    def location(self, driver_id, body):
        """Record a ping; returns the offer presented to this driver (as the long-poll
        shows it) or None, so a driver that does not long-poll learns of it here."""
        driver_id = check_driver_id(driver_id)
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        lat, lon, status = body.get("lat"), body.get("lon"), body.get("status", "free")
        if isinstance(lat, bool) or isinstance(lon, bool):
            raise BadRequest("lat and lon must be numbers")
        self.geo.update(driver_id, lat, lon, status, self.clock.monotonic())
        return self.dispatcher.current_offer(driver_id)

    def poll_offer(self, driver_id, timeout):
        driver_id = check_driver_id(driver_id)
        return self.dispatcher.poll(driver_id, timeout)

    def accept(self, driver_id, order_id):
        self._check_open()
        return self.dispatcher.accept(check_driver_id(driver_id), order_id)

    def decline(self, driver_id, order_id):
        self._check_open()
        return self.dispatcher.decline(check_driver_id(driver_id), order_id)

    # -- orders ----------------------------------------------------------------------------

    def create_order(self, body):
        client, pickup, dropoff = om.parse_order_request(body)
        self._check_open()
        order, event = self.book.create(client, pickup, dropoff, wall=self.clock.time(),
                                        mono=self.clock.monotonic())
        self._emit(order, event)
        self.dispatcher.submit(order.id)
        return order

    def order(self, order_id):
        """The order as a dict: from memory, or (finished and forgotten) from PostgreSQL."""
        try:
            return self.book.get(order_id).to_dict()
        except UnknownOrder:
            if self.pg is None or not 0 < order_id < 1 << 63:  # not a bigint: never stored
                raise
        try:
            row = self.pg.fetch_one(ORDER_ROW, (order_id,))
        except DbError as exc:
            raise Unavailable(f"order {order_id} is not in memory and PostgreSQL is unavailable") from exc
        if row is None:
            raise UnknownOrder(f"no order {order_id}")
        return {"id": row["id"], "client": row["client"],
                "from": {"lat": row["from_lat"], "lon": row["from_lon"]},
                "to": {"lat": row["to_lat"], "lon": row["to_lon"]},
                "state": row["state"], "driver": row["driver"], "reason": row["reason"],
                "created_at": row["created_at"], "updated_at": row["updated_at"]}

    def cancel(self, order_id, reason):
        self._check_open()
        order = self.book.get(order_id)
        if order.state in om.FINAL_STATES:
            # Let the state machine say why (InvalidTransition, 409).
            om.transition(order, "cancel", reason=reason or "x", wall=self.clock.time())
        return self.dispatcher.cancel(order, reason)

    def arriving(self, order_id, driver_id):
        return self._driver_act(order_id, "arrive", driver_id)

    def complete(self, order_id, driver_id):
        order = self._driver_act(order_id, "complete", driver_id)
        self.geo.set_status(order.driver, "free", self.clock.monotonic())
        return order

    def _driver_act(self, order_id, action, driver_id):
        driver_id = check_driver_id(driver_id)
        self._check_open()
        order, event = self.book.act(order_id, action, driver=driver_id, wall=self.clock.time(),
                                     mono=self.clock.monotonic())
        self._emit(order, event)
        return order

    # -- stats and housekeeping ------------------------------------------------------------

    def stats(self):
        s = self.book.stats()
        for state, n in self.forgotten.items():
            s["orders"][state] += n
        s["drivers"] = self.geo.stats(self.clock.monotonic())
        s["dispatch"] = self.dispatcher.stats()
        s["history"] = self.history.stats()
        return s

    def run_janitor(self, interval=5.0):
        """Supervised: drop offline drivers and forget long-finished orders."""
        while True:
            self.clock.sleep(interval)
            self.sweep()

    def sweep(self):
        now = self.clock.monotonic()
        self.geo.expire(now)
        keep = self.settings.keep_finished
        while self._finished and self._finished[0][0] <= now - keep:
            _, oid = self._finished.popleft()
            order = self.book.forget(oid)
            if order is not None:
                self.forgotten[order.state] += 1

    # -- internals -------------------------------------------------------------------------

    def _check_open(self):
        if self.store.draining:
            raise Unavailable("the server is shutting down")

    def _emit(self, order, event):
        if event.to_state in om.FINAL_STATES:
            self._finished.append((self.clock.monotonic(), order.id))
        try:
            self.history.record(order, event)
        except QueueError as exc:
            # Only when the store fails under us (a WAL error): the order changed but its
            # event is not stored; say so loudly rather than hide it.
            self.log.error("order %s: event %s -> %s not recorded: %s", order.id,
                           event.from_state, event.to_state, exc)
            raise Unavailable(f"order {order.id}: history unavailable: {exc}") from exc


def check_driver_id(driver_id):
    if not isinstance(driver_id, str) or not driver_id or len(driver_id) > MAX_ID_LEN:
        raise BadRequest(f"a driver id is 1..{MAX_ID_LEN} characters")
    return driver_id
