"""Dispatch: orders to drivers, one offer at a time per driver, through durable tubes.

Three tubes of the queue store carry the work, so nothing in flight lives only in a
fiber's stack:

``<prefix>_dispatch`` (fifottl)
    one task per order that needs a driver: on creation, after a decline, after an
    offer expired. The dispatcher fiber takes it, picks the nearest free driver who has
    neither declined this order nor an offer outstanding, and offers the order; with no
    such driver it releases the task with a delay and looks again.
``<prefix>_offers`` (utubettl, utube = driver id, max_attempts 1)
    one task per offer. The utube key makes "one offer at a time per driver" the
    store's rule: the desk fiber takes every offer it may (at most one per driver), and
    the taken task *is* the offer the driver sees. Its ttr (15 s, or less when the
    order's accept deadline is nearer) runs from that take; when it lapses the store
    moves the task, as its last attempt, to
``<prefix>_offers_expired`` (fifo)
    where the expiry fiber turns it into the order's ``expire`` transition and puts the
    order back into dispatch.

A driver's long-poll (``poll``) waits on a Cond of its own, signalled when the desk
presents an offer; accept/decline ack the offer task. After a restart the store's
recovery hands taken offers back as orphans, which (max_attempts 1) sends them to the
expired tube: an offer does not outlive the process that presented it.

Contracts: every method runs between yields (the store and the order book never yield),
so each is atomic under the hub except where a put's journal wait yields, which is
why state is always changed before the put that publishes it.
"""
import collections
import logging

from deploy.taxi import orders as om
from deploy.taxi.errors import BadRequest, TaxiError, UnknownOrder
from fiberapp.runtime.sync import Cond
from queues.errors import NoSuchTask, QueueError
from queues.states import TAKEN

DESK = "taxi.offers"          # session owning presented offers (not an API session:
EXPIRY = "taxi.expiry"        # never swept as idle; recovery releases them as orphans)
DISPATCH = "taxi.dispatch"
POLL = 5.0                    # the fibers' take timeout: every wait has one


class NoOffer(TaxiError):
    """The driver has no offer for that order (never had, or it expired / was withdrawn)."""

    status = 409
    code = "no_offer"


class Unavailable(TaxiError):
    """The queue store refused the work (draining for shutdown, or a WAL failure)."""

    status = 503
    code = "unavailable"


class _Busy:
    """``exclude`` for GeoIndex.nearest_free: drivers who declined, or have an offer out."""

    __slots__ = ("declined", "offering")

    def __init__(self, declined, offering):
        self.declined, self.offering = declined, offering

    def __contains__(self, driver_id):
        return driver_id in self.offering or driver_id in self.declined


_Queued = collections.namedtuple("_Queued", "dispatch offers")


class Dispatcher:
    def __init__(self, store, geo, book, clock, settings, emit, log=None):
        """``emit(order, event)`` records an order transition (the history writer)."""
        self.geo, self.book, self.clock, self.settings = geo, book, clock, settings
        self.emit = emit
        self.log = log or logging.getLogger("taxi.dispatch")
        self.expired_tube = store.create_tube(settings.tube("offers_expired"), "fifo", if_not_exists=True)
        self.offers_tube = store.create_tube(
            settings.tube("offers"), "utubettl", if_not_exists=True, ttr=settings.offer_ttr,
            max_attempts=1, dead_letter=self.expired_tube.name)
        self.dispatch_tube = store.create_tube(settings.tube("dispatch"), "fifottl", if_not_exists=True)
        self.offering = {}    # driver id -> order id: an offer is out (queued or presented)
        self.presented = {}   # driver id -> the offer task the desk holds for that driver
        self._conds = {}      # driver id -> Cond, while someone long-polls
        self.offers_made = 0
        self.offers_expired = 0

    # -- what the HTTP handlers call -------------------------------------------------------

    def submit(self, order_id):
        """Queue an order for (re)dispatch."""
        try:
            self.dispatch_tube.put({"order": order_id})
        except QueueError as exc:
            raise Unavailable(f"cannot queue order {order_id} for dispatch: {exc}") from exc

    def poll(self, driver_id, timeout):
        """The driver's current offer as a dict, waiting up to ``timeout`` seconds for one;
        None when none came."""
        clock = self.clock
        deadline = clock.monotonic() + timeout
        while True:
            task = self.presented.get(driver_id)
            if task is not None:
                return self._offer_view(task)
            left = deadline - clock.monotonic()
            if left <= 0:
                return None
            cond = self._conds.get(driver_id)
            if cond is None:
                cond = self._conds[driver_id] = Cond(clock=clock)
            try:
                cond.wait(left)
            finally:
                if not cond.waiters() and self._conds.get(driver_id) is cond:
                    del self._conds[driver_id]

    def current_offer(self, driver_id):
        """The offer presented to the driver, as a dict, or None; never waits."""
        task = self.presented.get(driver_id)
        return None if task is None else self._offer_view(task)

    def accept(self, driver_id, order_id):
        task = self._presented_offer(driver_id, order_id)
        now = self.clock.monotonic()
        order, event = self.book.act(order_id, "accept", driver=driver_id, wall=self.clock.time(), mono=now)
        self._withdraw(driver_id, order_id, task)
        self.geo.set_status(driver_id, "busy", now)
        self.emit(order, event)
        return order

    def decline(self, driver_id, order_id):
        task = self._presented_offer(driver_id, order_id)
        order, event = self.book.act(order_id, "decline", driver=driver_id, wall=self.clock.time(),
                                     mono=self.clock.monotonic())
        self._withdraw(driver_id, order_id, task)
        self.emit(order, event)
        self.submit(order_id)
        return order

    def withdraw_for(self, order):
        """The order is being cancelled: take back its outstanding offer, if any."""
        if order.state != om.OFFERED:
            return
        driver_id = order.driver
        if self.offering.get(driver_id) != order.id:
            return
        task = self.presented.get(driver_id)
        if task is not None and task.data["order"] != order.id:
            task = None
        # An offer still queued in the utube is dropped by the desk when it reaches it.
        self._withdraw(driver_id, order.id, task)

    # -- the fibers ------------------------------------------------------------------------

    def run_dispatcher(self):
        """Supervised: take orders needing a driver and offer each to the nearest one."""
        _release_leftovers(self.dispatch_tube, DISPATCH)
        tube = self.dispatch_tube
        while True:
            task = tube.take(timeout=POLL, session=DISPATCH)
            if task is not None:
                self.dispatch_one(task)

    def dispatch_one(self, task):
        tube, clock, settings = self.dispatch_tube, self.clock, self.settings
        order = self._order(task.data["order"])
        if order is None or order.state != om.CREATED:
            tube.ack(task.id, session=DISPATCH)  # cancelled, or already offered: stale
            return
        now = clock.monotonic()
        left = order.created_mono + settings.accept_timeout - now
        if left <= 0:
            self.cancel(order, f"no driver accepted within {settings.accept_timeout:g} s")
            tube.ack(task.id, session=DISPATCH)
            return
        found = self.geo.nearest_free(order.pickup[0], order.pickup[1], k=1, now=now,
                                      exclude=_Busy(order.declined, self.offering))
        if not found:
            # Look again later, but never past the accept deadline, so the cancellation
            # happens on time.
            tube.release(task.id, delay=min(settings.retry_delay, left), session=DISPATCH)
            return
        driver_id = found[0][1].id
        order, event = self.book.act(order.id, "offer", driver=driver_id, wall=clock.time(), mono=now)
        self.offering[driver_id] = order.id
        self.emit(order, event)
        try:
            self.offers_tube.put(
                {"order": order.id, "driver": driver_id,
                 "from": {"lat": order.pickup[0], "lon": order.pickup[1]},
                 "to": {"lat": order.dropoff[0], "lon": order.dropoff[1]}},
                utube=driver_id, ttr=max(min(settings.offer_ttr, left), 0.001))
        except QueueError:
            # Not published: undo as an expiry (the driver is skipped next time) and retry.
            self.offering.pop(driver_id, None)
            order, event = self.book.act(order.id, "expire", driver=driver_id, wall=clock.time(),
                                         mono=clock.monotonic())
            self.emit(order, event)
            tube.release(task.id, delay=min(settings.retry_delay, left), session=DISPATCH)
            raise
        self.offers_made += 1
        tube.ack(task.id, session=DISPATCH)

    def run_desk(self):
        """Supervised: take every offer the utube allows and present it to its driver."""
        tube = self.offers_tube
        while True:
            task = tube.take(timeout=POLL, session=DESK)
            if task is None:
                continue
            driver_id, order_id = task.data["driver"], task.data["order"]
            order = self._order(order_id)
            if (order is None or order.state != om.OFFERED or order.driver != driver_id
                    or self.offering.get(driver_id) != order_id):
                self._delete(tube, task.id)  # withdrawn while queued
                continue
            self.presented[driver_id] = task
            cond = self._conds.get(driver_id)
            if cond is not None:
                cond.broadcast()

    def run_expiry(self):
        """Supervised: an offer's ttr lapsed -> the order's ``expire``, back to dispatch."""
        _release_leftovers(self.expired_tube, EXPIRY)
        tube = self.expired_tube
        while True:
            task = tube.take(timeout=POLL, session=EXPIRY)
            if task is not None:
                self.expire_one(task)

    def expire_one(self, task):
        driver_id, order_id = task.data["driver"], task.data["order"]
        held = self.presented.get(driver_id)
        if held is not None and held.data["order"] == order_id:
            del self.presented[driver_id]
        if self.offering.get(driver_id) == order_id:
            del self.offering[driver_id]
        order = self._order(order_id)
        if order is not None and order.state == om.OFFERED and order.driver == driver_id:
            order, event = self.book.act(order_id, "expire", driver=driver_id, wall=self.clock.time(),
                                         mono=self.clock.monotonic())
            self.offers_expired += 1
            self.emit(order, event)
            self.submit(order_id)
        self.expired_tube.ack(task.id, session=EXPIRY)

    # -- shared with the service -----------------------------------------------------------

    def cancel(self, order, reason):
        """Cancel an open order (withdrawing its offer); returns it. A bad reason is
        refused before anything changes."""
        if not isinstance(reason, str) or not reason.strip() or len(reason) > om.MAX_REASON:
            raise BadRequest(f"a cancel reason is 1..{om.MAX_REASON} characters")
        self.withdraw_for(order)
        order, event = self.book.act(order.id, "cancel", reason=reason, wall=self.clock.time(),
                                     mono=self.clock.monotonic())
        self.emit(order, event)
        return order

    def stats(self):
        return {"offers_out": len(self.offering), "offers_presented": len(self.presented),
                "offers_made": self.offers_made, "offers_expired": self.offers_expired,
                "waiting_for_driver": self.dispatch_tube.statistics()["tasks"]["total"]}

    def queued_work(self):
        """What the store kept across a restart: ``.dispatch``, the order ids with a
        dispatch task, and ``.offers``, the (driver, order id) pairs with an offer task,
        queued, presented or expired (TaxiService.start_up reads it)."""
        dispatch = {task.data["order"] for task in self.dispatch_tube.tasks(limit=None)}
        offers = {(task.data["driver"], task.data["order"])
                  for tube in (self.offers_tube, self.expired_tube) for task in tube.tasks(limit=None)}
        return _Queued(dispatch, offers)

    # -- internals -------------------------------------------------------------------------

    def _order(self, order_id):
        try:
            return self.book.get(order_id)
        except UnknownOrder:
            return None

    def _presented_offer(self, driver_id, order_id):
        task = self.presented.get(driver_id)
        if task is None or task.data["order"] != order_id:
            raise NoOffer(f"driver {driver_id} has no offer for order {order_id}")
        try:
            live = self.offers_tube.peek(task.id)
        except NoSuchTask:
            live = None
        if live is None or live.state != TAKEN:
            raise NoOffer(f"the offer of order {order_id} to driver {driver_id} has expired")
        return task

    def _withdraw(self, driver_id, order_id, task):
        if self.offering.get(driver_id) == order_id:
            del self.offering[driver_id]
        if task is not None:
            if self.presented.get(driver_id) is task:
                del self.presented[driver_id]
            try:
                self.offers_tube.ack(task.id, session=DESK)
            except QueueError:
                pass  # lapsed a moment ago: the expiry fiber will find the order moved on

    def _delete(self, tube, task_id):
        try:
            tube.delete(task_id)
        except NoSuchTask:
            pass

    def _offer_view(self, task):
        data = task.data
        left = None if task.ttr_at is None else round(max(0.0, task.ttr_at - self.clock.monotonic()), 3)
        return {"order_id": data["order"], "from": data["from"], "to": data["to"], "expires_in": left}


def _release_leftovers(tube, session):
    """A restarted fiber first gives back what its previous incarnation had taken."""
    for task in tube.tasks(state=TAKEN, limit=None):
        if task.session == session:
            try:
                tube.release(task.id, session=session)
            except QueueError:
                pass
