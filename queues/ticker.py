"""The one ticker fiber of a store: it sleeps until the earliest deadline of any tube
(store._wake_at), is woken early when an earlier one is scheduled, and applies what lapsed
through store.tick(now). It also ends the sessions of fibers that died (the death notice
arrives in the hub, which must not block on the journal).

Sleeping goes through the store's clock, so under FakeClock the ticker runs exactly when a
test advances time past a deadline.
"""
import gevent
import gevent.event

from queues.errors import QueueError

INF = float("inf")
RETRY = 0.1  # seconds before retrying a tick whose op could not be logged


class Ticker:
    def __init__(self, store, runtime=None):
        self._store = store
        self._runtime = runtime
        self._event = gevent.event.Event()
        self._sessions = []
        self._fiber = None
        self._stopped = False

    def start(self):
        if self._runtime is not None and hasattr(self._runtime, "spawn"):
            self._fiber = self._runtime.spawn(self._run, name="queues.ticker")
        else:
            self._fiber = gevent.spawn(self._run)
            self._fiber.name = "queues.ticker"

    def stop(self):
        self._stopped = True
        if self._fiber is not None:
            self._fiber.kill(block=False)
            self._fiber = None

    def wake(self):
        self._event.set()

    def end_session(self, name):
        self._sessions.append(name)
        self._event.set()

    def _run(self):
        store = self._store
        clock = store.clock
        while not self._stopped:
            self._event.clear()
            wake_at = store._wake_at
            try:
                while self._sessions:
                    store._end_session(self._sessions[0])
                    self._sessions.pop(0)
                now = clock.monotonic()
                if now >= store._wake_at:
                    store.tick(now)
                    continue
            except QueueError:
                store.log.exception("queue ticker: tick failed; retrying in %ss", RETRY)
                wake_at = clock.monotonic() + RETRY
            timer = clock.call_at(wake_at, self._event.set) if wake_at < INF else None
            try:
                self._event.wait()
            finally:
                if timer is not None:
                    timer.cancel()
