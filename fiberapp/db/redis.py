"""Redis for fiber scripts: redis-py on a gevent-safe blocking pool.

redis-py looks its sockets up at call time, so after patch_all() every command yields to
the loop. What this module adds:

- the pool is a BlockingConnectionPool whose queue is gevent.queue.LifoQueue: the default
  stdlib LifoQueue can leak pool slots when a fiber is interrupted (gevent#1875,
  redis-py#1147), and a bounded pool makes max_connections a real limit;
- hiredis parses replies when it is installed (redis-py picks it up by itself);
- config validation ([redis] url, max_connections, socket_timeout, connect_timeout,
  max_wait, retries, client_name, decode_responses, health_interval);
- typed errors: every command raises fiberapp.db errors, never redis-py's;
- health() for /health, and subscribe(): pub/sub in a supervised fiber.

Commands are redis-py's (app.redis.get, .set, .blpop, ...; see redis-py's docs); replies
are bytes unless decode_responses = true (then str).

Contracts:
- A blocking command (BLPOP, BRPOP, XREAD BLOCK, ...) must ask for a timeout shorter
  than socket_timeout, or the socket times out first (QueryTimeout) and the connection
  is dropped. Use a client with socket_timeout = 0 (none) for long blocking reads.
- A connection killed while idle in the pool (server restart, CLIENT KILL) is replaced
  transparently at checkout. A command whose connection dies under it is re-sent up to
  `retries` times (default 1); set retries = 0 if your commands are not idempotent.
"""
import logging

import gevent
import gevent.queue
import redis
import redis.backoff
import redis.client
import redis.exceptions
import redis.retry
import redis.utils

from fiberapp.db.errors import (
    DbClosed,
    DbConfigError,
    DbUnavailable,
    PoolExhausted,
    QueryError,
    QueryTimeout,
)
from fiberapp.db.settings import Section
from fiberapp.db.supervise import Subscriber

log = logging.getLogger(__name__)


def translate(exc, name="redis"):
    """redis-py exception -> fiberapp.db error (the caller chains it)."""
    if isinstance(exc, redis.exceptions.TimeoutError):
        return QueryTimeout(f"{name}: timed out: {exc}")
    if isinstance(exc, redis.exceptions.ConnectionError):
        if "No connection available" in str(exc):
            return PoolExhausted(f"{name}: no free connection within max_wait")
        return DbUnavailable(f"{name}: {exc}")
    return QueryError(f"{name}: {exc}")


class _Pipeline(redis.client.Pipeline):
    def execute(self, raise_on_error=True):
        try:
            return super().execute(raise_on_error)
        except redis.exceptions.RedisError as exc:
            raise translate(exc) from exc


class _Redis(redis.Redis):
    """redis.Redis whose commands raise fiberapp.db errors. Every command funnels
    through execute_command, so one override covers the whole command set."""

    def execute_command(self, *args, **options):
        try:
            return super().execute_command(*args, **options)
        except redis.exceptions.RedisError as exc:
            raise translate(exc) from exc

    def pipeline(self, transaction=True, shard_hint=None):
        return _Pipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)


class RedisClient:
    """app.redis: redis-py's command methods plus open/close/health/subscribe."""

    @classmethod
    def from_config(cls, section, runtime):
        s = Section(section, "redis")
        client = cls(
            s.string("url", "redis://127.0.0.1:6379/0"),
            runtime=runtime,
            max_connections=s.integer("max_connections", 50, minimum=1),
            socket_timeout=s.seconds("socket_timeout", 5.0, allow_zero=True),
            connect_timeout=s.seconds("connect_timeout", 5.0),
            max_wait=s.seconds("max_wait", 5.0),
            retries=s.integer("retries", 1, minimum=0),
            client_name=s.string("client_name", "fiberapp"),
            decode_responses=s.boolean("decode_responses", False),
            health_interval=s.seconds("health_interval", 0, allow_zero=True),
        )
        s.done()
        return client

    def __init__(
        self,
        url="redis://127.0.0.1:6379/0",
        *,
        runtime,
        max_connections=50,
        socket_timeout=5.0,
        connect_timeout=5.0,
        max_wait=5.0,
        retries=1,
        client_name="fiberapp",
        decode_responses=False,
        health_interval=0.0,
    ):
        self.url = url
        self.runtime = runtime
        self.max_connections = max_connections
        self.socket_timeout = socket_timeout or None  # 0 in config = no timeout
        self.connect_timeout = connect_timeout
        self.max_wait = max_wait
        self.retries = retries
        self.client_name = client_name
        self.decode_responses = decode_responses
        self.health_interval = health_interval
        self._client = None
        self._failure = None
        self._watch = None
        self._subscriptions = []
        # Fail on a malformed url now (from_config time), not at the first command.
        self._make_pool(self.socket_timeout).disconnect()

    def _make_pool(self, socket_timeout):
        try:
            return redis.BlockingConnectionPool.from_url(
                self.url,
                queue_class=gevent.queue.LifoQueue,
                max_connections=self.max_connections,
                timeout=self.max_wait,
                client_name=self.client_name,
                decode_responses=self.decode_responses,
                socket_timeout=socket_timeout,
                socket_connect_timeout=self.connect_timeout,
                retry=redis.retry.Retry(redis.backoff.ExponentialWithJitterBackoff(base=0.01, cap=0.2), self.retries),
            )
        except (ValueError, TypeError) as exc:
            raise DbConfigError("redis.url", str(exc)) from None

    # -- lifecycle -------------------------------------------------------------------------

    def open(self, wait=False):
        """Create the pool (connections are made on demand). wait=True also PINGs, raising
        DbUnavailable if the server cannot be reached."""
        if self._client is None:
            self._client = _Redis(connection_pool=self._make_pool(self.socket_timeout))
            if self.health_interval:
                self._watch = self.runtime.spawn(self._watch_loop, name="redis-health")
        if wait:
            _Tracked(self, self._client.ping)()
        return self

    def close(self, timeout=5.0):
        """Stop subscriptions and the health fiber, drop every connection. Idempotent."""
        for sub in self._subscriptions:
            sub.stop(timeout)
        self._subscriptions = []
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
            gevent.joinall([watch], timeout=timeout)
        client, self._client = self._client, None
        if client is not None:
            client.connection_pool.disconnect()

    @property
    def client(self):
        """The underlying redis.Redis (commands raise fiberapp.db errors)."""
        if self._client is None:
            raise DbClosed("redis client is not open")
        return self._client

    def __getattr__(self, name):
        # Only reached for names RedisClient lacks: the redis-py command methods.
        if name.startswith("_"):
            raise AttributeError(name)
        return _Tracked(self, getattr(self.client, name))

    def pipeline(self, transaction=True):
        """A redis-py pipeline (MULTI/EXEC when transaction=True); execute() raises
        fiberapp.db errors."""
        return self.client.pipeline(transaction=transaction)

    def health(self):
        """{"status": "ok"|"degraded", ...}; never blocks. "degraded" while closed, since
        a command failed with DbUnavailable and none has succeeded yet, or while a
        subscription is (re)connecting."""
        if self._client is None:
            return {"status": "degraded", "error": "closed"}
        pool = self._client.connection_pool
        self._subscriptions = [x for x in self._subscriptions if not x.stopped]
        down = sum(1 for x in self._subscriptions if not x.ready)
        return {
            "status": "ok" if self._failure is None and not down else "degraded",
            "max_connections": self.max_connections,
            "connections": len(getattr(pool, "_connections", ())),
            "parser": "hiredis" if redis.utils.HIREDIS_AVAILABLE else "python",
            "subscriptions": len(self._subscriptions),
            "subscriptions_down": down,
            "error": None if self._failure is None else str(self._failure),
        }

    def ping(self):
        """PING; True if it worked. Updates health()."""
        try:
            return bool(_Tracked(self, self.client.ping)())
        except (DbUnavailable, PoolExhausted, QueryTimeout):
            return False

    def _watch_loop(self):
        while True:
            self.runtime.clock.sleep(self.health_interval)
            self.ping()

    def subscribe(self, *channels, patterns=(), callback=None, channel=None):
        """Start a supervised fiber subscribed to channels (and glob patterns); returns a
        started RedisSubscription. Messages (redis-py dicts: type, channel, pattern,
        data) go to callback(msg) or to a fiberapp Channel (.channel)."""
        self.client  # raises DbClosed when not open
        sub = RedisSubscription(self, channels, patterns, callback=callback, channel=channel)
        self._subscriptions.append(sub)
        return sub.start()


class _Tracked:
    """A bound command that keeps health() current: failures of the connection mark the
    client degraded, any success clears it."""

    __slots__ = ("_owner", "_fn")

    def __init__(self, owner, fn):
        self._owner = owner
        self._fn = fn

    def __call__(self, *args, **kwargs):
        try:
            result = self._fn(*args, **kwargs)
        except DbUnavailable as exc:
            self._owner._failure = exc
            raise
        self._owner._failure = None
        return result


class RedisSubscription(Subscriber):
    """Pub/sub on its own connection. It has no socket timeout (an idle subscription is
    normal), and a PING every health_check seconds notices a dead connection instead."""

    kind = "redis subscription"
    health_check = 5

    def __init__(self, owner, channels, patterns, callback=None, channel=None):
        if not channels and not patterns:
            raise ValueError("subscribe() needs channels or patterns")
        label = ",".join([*channels, *patterns])[:200]
        super().__init__(owner.runtime, f"redis-sub:{label}", callback, channel)
        self.owner = owner
        self.channels = tuple(channels)
        self.patterns = tuple(patterns)

    def session(self):
        clock = self.runtime.clock
        client = redis.Redis(connection_pool=self.owner._make_pool(None))
        pubsub = client.pubsub()
        try:
            if self.channels:
                pubsub.subscribe(*self.channels)
            if self.patterns:
                pubsub.psubscribe(*self.patterns)
            unconfirmed = len(self.channels) + len(self.patterns)
            last_heard = clock.monotonic()
            pinged = False
            while True:
                message = pubsub.get_message(timeout=1.0)
                now = clock.monotonic()
                if message is None:
                    if now - last_heard >= self.health_check:
                        if pinged:  # a PING went unanswered for a whole period
                            raise DbUnavailable("redis subscription: no reply to PING")
                        pubsub.ping()
                        pinged, last_heard = True, now
                    continue
                last_heard, pinged = now, False
                kind = message["type"]
                if kind in ("subscribe", "psubscribe", b"subscribe", b"psubscribe"):
                    unconfirmed -= 1
                    if unconfirmed == 0:  # ready means every SUBSCRIBE is confirmed
                        self.mark_ready()
                elif kind in ("message", "pmessage", b"message", b"pmessage"):
                    self.deliver(message)
        finally:
            pubsub.close()
            client.connection_pool.disconnect()
