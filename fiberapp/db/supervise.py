"""A long-lived subscriber fiber that reconnects with backoff: the shape shared by
PostgreSQL LISTEN (pg_listen.PgListener) and Redis pub/sub (redis.RedisSubscription).

A subclass implements session(): connect, subscribe, call self.mark_ready(), then deliver
messages until the connection fails. Any Exception from session() is recorded and the
session is started again after a backoff that doubles from backoff[0] up to backoff[1]
(reset once a session gets ready again). Cancellation (stop()) is a BaseException, so it
ends the loop instead of being mistaken for a failure.

Messages sent while the subscriber is reconnecting are lost: neither LISTEN/NOTIFY nor
Redis pub/sub keeps messages for absent listeners. Use a queue when that matters.
"""
import logging

import gevent
import gevent.event

log = logging.getLogger(__name__)


class Subscriber:
    kind = "subscriber"

    def __init__(self, runtime, name, callback=None, channel=None, backoff=(0.1, 5.0)):
        if callback is not None and channel is not None:
            raise ValueError("give a callback or a channel, not both")
        if callback is None and channel is None:
            from fiberapp.runtime.sync import Channel

            channel = Channel(capacity=1000, clock=runtime.clock)
        self.runtime = runtime
        self.name = name
        self.callback = callback
        self.channel = channel
        self.backoff = (float(backoff[0]), float(backoff[1]))
        self.delivered = 0
        self.restarts = 0
        self.callback_errors = 0
        self.last_error = None
        self._ready = gevent.event.Event()
        self._stopping = False
        self._fiber = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self):
        if self._fiber is None:
            self._fiber = self.runtime.spawn(self._run, name=self.name)
        return self

    def wait_ready(self, timeout=None):
        """True once subscribed (again, after a reconnect); False if timeout passed first."""
        return self._ready.wait(timeout)

    @property
    def ready(self):
        return self._ready.is_set()

    @property
    def stopped(self):
        return self._stopping

    def stop(self, timeout=5.0):
        """Stop the fiber and close its connection. Idempotent."""
        self._stopping = True
        fiber, self._fiber = self._fiber, None
        if fiber is not None and not fiber.dead:
            fiber.cancel()
            gevent.joinall([fiber], timeout=timeout)
        self._ready.clear()
        if self.channel is not None and self.callback is None:
            self.channel.close()

    def health(self):
        return {
            "status": "ok" if self.ready else "degraded",
            "delivered": self.delivered,
            "restarts": self.restarts,
            "callback_errors": self.callback_errors,
            "last_error": None if self.last_error is None else repr(self.last_error),
        }

    # -- for subclasses ----------------------------------------------------------------------

    def session(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def mark_ready(self):
        self._delay = self.backoff[0]
        self._ready.set()

    def deliver(self, message):
        """Hand one message on. A failing callback is logged and counted, never fatal:
        one bad message must not tear down the subscription for the others."""
        self.delivered += 1
        if self.callback is None:
            self.channel.put(message)
            return
        try:
            self.callback(message)
        except Exception:
            self.callback_errors += 1
            log.exception("%s %s: callback failed", self.kind, self.name)

    # -- the loop ----------------------------------------------------------------------------

    def _run(self):
        self._delay = self.backoff[0]
        while not self._stopping:
            try:
                self.session()
            except Exception as exc:
                self.last_error = exc
                self.restarts += 1
                self._ready.clear()
                log.warning("%s %s failed (%s); retrying in %.2fs", self.kind, self.name, exc, self._delay)
                self.runtime.clock.sleep(self._delay)
                self._delay = min(self._delay * 2, self.backoff[1])
