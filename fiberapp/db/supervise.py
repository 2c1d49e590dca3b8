"""A long-lived subscriber under the runtime's supervisor: the shape shared by PostgreSQL
LISTEN (pg_listen.PgListener) and Redis pub/sub (redis.RedisSubscription).

A subclass implements session(): connect, subscribe, call self.mark_ready(), then deliver
messages until the connection fails. The session runs in a supervised fiber
(Runtime.supervise, restart="on-error"): any Exception ends that incarnation and the
supervisor starts a new one after a backoff that doubles from backoff[0] up to
backoff[1]. Cancellation (stop(), Runtime.stop()) ends supervision for good.

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
        self.callback_errors = 0
        self._ready = gevent.event.Event()
        self._stopping = False
        self._supervisor = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self):
        if self._supervisor is None and not self._stopping:
            self._supervisor = self.runtime.supervise(
                self._session_once, name=self.name, restart="on-error", backoff=self.backoff
            )
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

    @property
    def restarts(self):
        return 0 if self._supervisor is None else self._supervisor.restarts

    @property
    def last_error(self):
        return None if self._supervisor is None else self._supervisor.last_error

    def stop(self, timeout=5.0):
        """End supervision, stop the fiber, close its connection. Idempotent."""
        self._stopping = True
        supervisor = self._supervisor  # kept: restarts and last_error stay readable
        if supervisor is not None:
            fiber = supervisor.fiber
            supervisor.cancel()
            if fiber is not None:
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

    def _session_once(self):
        try:
            self.session()
        except BaseException:
            self._ready.clear()  # not subscribed until the next incarnation says so
            raise
