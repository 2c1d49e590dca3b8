"""The order state machine, as plain code.

::

    created --offer--> offered --accept--> accepted --arrive--> arriving --complete--> completed
       ^                  |
       +--decline/expire--+        (any state but completed/cancelled) --cancel(reason)--> cancelled

An offer goes to one driver at a time; when that driver declines or does not answer in
time (expire) the order goes back to ``created`` and remembers the driver in
``declined`` so the dispatcher offers it to someone else. Accept, decline and expire
must come from the driver the order was offered to; arrive and complete from the
driver who accepted it (WrongDriver otherwise).

Every transition returns an OrderEvent: the record the history writer stores in
``taxi_order_events`` (see schema.sql and sql.py). Time is passed in twice: ``wall``
(epoch seconds, persisted) and ``mono`` (monotonic seconds, for the dispatch latency:
created -> accepted, recorded in a Histogram for percentiles). Nothing here does I/O,
reads a clock or yields, so under one gevent hub each call is atomic.
"""
from collections import namedtuple

from deploy.taxi.errors import BadRequest, InvalidTransition, UnknownOrder, WrongDriver
from deploy.taxi.geo import check_point
from fiberapp.loadgen.histogram import Histogram

CREATED = "created"
OFFERED = "offered"
ACCEPTED = "accepted"
ARRIVING = "arriving"
COMPLETED = "completed"
CANCELLED = "cancelled"
STATES = (CREATED, OFFERED, ACCEPTED, ARRIVING, COMPLETED, CANCELLED)
OPEN_STATES = (CREATED, OFFERED, ACCEPTED, ARRIVING)
FINAL_STATES = (COMPLETED, CANCELLED)

# action -> {from state: to state}. The whole machine; nothing else decides.
TRANSITIONS = {
    "offer": {CREATED: OFFERED},
    "decline": {OFFERED: CREATED},
    "expire": {OFFERED: CREATED},
    "accept": {OFFERED: ACCEPTED},
    "arrive": {ACCEPTED: ARRIVING},
    "complete": {ARRIVING: COMPLETED},
    "cancel": {state: CANCELLED for state in OPEN_STATES},
}
# Which driver may perform an action: the one offered to, or the one assigned.
_BY_OFFERED_DRIVER = frozenset({"decline", "expire", "accept"})
_BY_ASSIGNED_DRIVER = frozenset({"arrive", "complete"})
MAX_REASON = 200

OrderEvent = namedtuple("OrderEvent", "order_id from_state to_state at driver reason")
OrderEvent.__doc__ = """One transition, as stored in taxi_order_events (from_state is None for creation)."""


class Order:
    __slots__ = (
        "id", "client", "pickup", "dropoff", "state", "driver", "reason",
        "created_at", "updated_at", "created_mono", "declined",
    )

    def __init__(self, order_id, client, pickup, dropoff, wall, mono):
        self.id = order_id
        self.client = client
        self.pickup = pickup  # (lat, lon)
        self.dropoff = dropoff
        self.state = CREATED
        self.driver = None  # offered-to while offered, assigned from accepted on
        self.reason = None
        self.created_at = wall
        self.updated_at = wall
        self.created_mono = mono
        self.declined = set()

    def to_dict(self):
        return {
            "id": self.id,
            "client": self.client,
            "from": {"lat": self.pickup[0], "lon": self.pickup[1]},
            "to": {"lat": self.dropoff[0], "lon": self.dropoff[1]},
            "state": self.state,
            "driver": self.driver,
            "reason": self.reason,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    def to_row(self):
        """The taxi_orders row (see sql.UPSERT_ORDER), timestamps as epoch seconds."""
        return (
            self.id, self.client, self.pickup[0], self.pickup[1], self.dropoff[0], self.dropoff[1],
            self.state, self.driver, self.reason, self.created_at, self.updated_at,
        )


def transition(order, action, *, driver=None, reason=None, wall):
    """Apply ``action`` to ``order`` in place and return the OrderEvent.

    Raises BadRequest (unknown action, missing driver/reason), InvalidTransition (the
    state does not allow it) or WrongDriver; the order is unchanged when it raises.
    """
    table = TRANSITIONS.get(action)
    if table is None:
        raise BadRequest(f"unknown action {action!r}")
    target = table.get(order.state)
    if target is None:
        raise InvalidTransition(order.id, order.state, action)
    if action == "offer":
        if driver is None:
            raise BadRequest("an offer needs a driver")
        if driver in order.declined:
            raise BadRequest(f"driver {driver} already declined order {order.id}")
    elif action in _BY_OFFERED_DRIVER or action in _BY_ASSIGNED_DRIVER:
        if driver != order.driver:
            raise WrongDriver(f"order {order.id} is not {'offered' if action in _BY_OFFERED_DRIVER else 'assigned'} to driver {driver}")
    elif action == "cancel":
        if not isinstance(reason, str) or not reason.strip():
            raise BadRequest("cancel needs a reason")
        if len(reason) > MAX_REASON:
            raise BadRequest(f"reason longer than {MAX_REASON} characters")
    source = order.state
    if action == "offer":
        order.driver = driver
    elif action in ("decline", "expire"):
        order.declined.add(driver)
        order.driver = None
    elif action == "cancel":
        order.reason = reason
        driver = order.driver if driver is None else driver
    order.state = target
    order.updated_at = wall
    return OrderEvent(order.id, source, target, wall, driver, reason if action == "cancel" else None)


def parse_order_request(body):
    """Validate a POST /taxi/orders body -> (client, pickup, dropoff) or BadRequest."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    client = body.get("client")
    if not isinstance(client, (str, int)) or isinstance(client, bool) or str(client) == "" or len(str(client)) > 100:
        raise BadRequest("client must be a non-empty string of at most 100 characters")
    points = []
    for key in ("from", "to"):
        point = body.get(key)
        if not isinstance(point, dict) or "lat" not in point or "lon" not in point:
            raise BadRequest(f"{key!r} must be an object with lat and lon")
        if isinstance(point["lat"], bool) or isinstance(point["lon"], bool):
            raise BadRequest(f"{key!r} coordinates must be numbers")
        points.append(check_point(point["lat"], point["lon"]))
    return str(client), points[0], points[1]


class OrderBook:
    """The live orders of one process: creation, transitions, counts, dispatch latency.

    Ids come from ``next_id`` (start it above the highest id in the database on
    recovery). Finished orders stay until ``forget`` so clients can read their end.
    """

    def __init__(self, next_id=1):
        self._orders = {}
        self._next_id = next_id
        self.counts = dict.fromkeys(STATES, 0)
        self.dispatch_latency = Histogram()

    def create(self, client, pickup, dropoff, *, wall, mono):
        order = Order(self._next_id, client, pickup, dropoff, wall, mono)
        self._next_id += 1
        self._orders[order.id] = order
        self.counts[CREATED] += 1
        return order, OrderEvent(order.id, None, CREATED, wall, None, None)

    @property
    def next_id(self):
        """The id the next created order gets."""
        return self._next_id

    def restore(self, order):
        """Put back an order read from storage at start (its state as stored); ids
        continue above it."""
        if order.id in self._orders:
            raise BadRequest(f"order {order.id} is already in the book")
        self._orders[order.id] = order
        self.counts[order.state] += 1
        self._next_id = max(self._next_id, order.id + 1)
        return order

    def get(self, order_id):
        try:
            return self._orders[order_id]
        except KeyError:
            raise UnknownOrder(f"no order {order_id}") from None

    def act(self, order_id, action, *, driver=None, reason=None, wall, mono):
        """transition() on a stored order, keeping counts and the latency histogram."""
        order = self.get(order_id)
        event = transition(order, action, driver=driver, reason=reason, wall=wall)
        self.counts[event.from_state] -= 1
        self.counts[event.to_state] += 1
        if event.to_state == ACCEPTED:
            self.dispatch_latency.record(max(0.0, mono - order.created_mono))
        return order, event

    def open_orders(self, state=None):
        """Open orders (optionally of one state), oldest first: what a dispatcher scans."""
        wanted = OPEN_STATES if state is None else (state,)
        return [o for o in self._orders.values() if o.state in wanted]

    def forget(self, order_id):
        order = self._orders.pop(order_id, None)
        if order is not None:
            self.counts[order.state] -= 1
        return order

    def __len__(self):
        return len(self._orders)

    def stats(self):
        """The "orders" and "dispatch_latency" parts of GET /taxi/stats."""
        s = self.dispatch_latency.summary()
        return {
            "orders": dict(self.counts),
            "dispatch_latency": {"p50": s["p50"], "p95": s["p95"], "p99": s["p99"], "count": s["count"]},
        }
