"""Redis against the real server: commands, concurrency, typed errors, killed
connections, pool exhaustion, pub/sub."""
import gevent
import gevent.event
import gevent.queue
import pytest
import redis as redis_py

from fiberapp.db.errors import DbUnavailable, PoolExhausted, QueryError, QueryTimeout
from fiberapp.db.redis import RedisClient
from tests.db.conftest import wait_for


@pytest.fixture
def name(app_name):
    return app_name


@pytest.fixture
def raw(redis_url):
    """A plain redis-py client for looking at the server from outside."""
    client = redis_py.Redis.from_url(redis_url)
    yield client
    client.close()


def our_clients(raw, client_name, cmd=None):
    return [c for c in raw.client_list() if c["name"] == client_name and (cmd is None or c["cmd"] == cmd)]


def make(redis_url, runtime, client_name, **kw):
    client = RedisClient(redis_url, runtime=runtime, client_name=client_name, **kw)
    return client.open(wait=True)


def test_commands_and_typed_errors(redis, name):
    key = f"{name}:k"
    try:
        redis.set(key, "v", ex=60)
        assert redis.get(key) == b"v"
        with pytest.raises(QueryError) as info:
            redis.lpush(key, "x")  # WRONGTYPE: the key holds a string
        assert "WRONGTYPE" in str(info.value)
        with redis.pipeline() as p:
            p.incr(f"{name}:n").incr(f"{name}:n").get(f"{name}:n")
            assert p.execute() == [1, 2, b"2"]
        health = redis.health()
        assert health["status"] == "ok" and health["parser"] == "hiredis"
    finally:
        redis.delete(key, f"{name}:n")


def test_decode_responses(redis_url, runtime, name):
    client = RedisClient.from_config({"url": redis_url, "decode_responses": True, "client_name": name}, runtime).open()
    try:
        client.set(f"{name}:s", "text", ex=10)
        assert client.get(f"{name}:s") == "text"
    finally:
        client.close()


def test_the_pool_is_bounded_and_uses_a_gevent_queue(redis):
    pool = redis.client.connection_pool
    assert isinstance(pool, redis_py.BlockingConnectionPool)
    assert isinstance(pool.pool, gevent.queue.LifoQueue)
    assert pool.max_connections == 10


def test_fifty_blpops_share_ten_connections(redis_url, runtime, raw, name, ticker):
    client = make(redis_url, runtime, name, max_connections=10, socket_timeout=5.0)
    peak = 0
    done = gevent.event.Event()

    def watch():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, len(our_clients(raw, name, "blpop")))
            gevent.sleep(0.02)

    watcher = runtime.spawn(watch, name="test-watch")
    clock = runtime.clock
    ticks = ticker.count
    start = clock.monotonic()
    fibers = [runtime.spawn(client.blpop, [f"{name}:empty"], timeout=0.2, name=f"b{i}") for i in range(50)]
    gevent.joinall(fibers, raise_error=True)
    wall = clock.monotonic() - start
    done.set()
    watcher.join()
    client.close()
    print(f"\n50 x BLPOP(0.2) over 10 connections: {wall:.2f}s wall, largest loop stall {ticker.max_gap * 1000:.1f} ms")
    assert all(f.value is None for f in fibers)  # each timed out empty-handed
    assert peak == 10
    assert ticker.count - ticks > 20


def test_blpop_gets_what_another_fiber_pushes(redis, runtime, name):
    key = f"{name}:q"
    waiter = runtime.spawn(redis.blpop, [key], timeout=3, name="waiter")
    gevent.sleep(0)
    redis.rpush(key, "job")
    assert waiter.join(timeout=5) == (key.encode(), b"job")


def test_killed_idle_connections_are_replaced(redis, raw, name):
    assert redis.ping()  # one connection made and back in the pool
    ours = our_clients(raw, redis.client_name)
    assert ours
    for c in ours:
        raw.client_kill_filter(_id=c["id"])
    assert redis.set(f"{name}:after", "1", ex=10) is True
    after = {c["id"] for c in our_clients(raw, redis.client_name)}
    assert after and not after & {c["id"] for c in ours}
    assert redis.health()["status"] == "ok"


def test_killed_connection_in_use_raises_then_recovers(redis_url, runtime, raw, name):
    client = make(redis_url, runtime, name, retries=0)
    try:
        victim = runtime.spawn(client.blpop, [f"{name}:never"], timeout=4, name="victim")
        wait_for(lambda: our_clients(raw, name, "blpop"), what="the BLPOP to reach the server")
        for c in our_clients(raw, name, "blpop"):
            raw.client_kill_filter(_id=c["id"])
        gevent.joinall([victim])
        assert isinstance(victim.exception, DbUnavailable)
        assert client.health()["status"] == "degraded"
        assert client.ping() and client.health()["status"] == "ok"
    finally:
        client.close()


def test_exhausted_pool_raises_after_max_wait(redis_url, runtime, name):
    client = make(redis_url, runtime, name, max_connections=1, max_wait=0.2)
    try:
        holder = runtime.spawn(client.blpop, [f"{name}:never"], timeout=0.4, name="holder")
        gevent.sleep(0)
        with pytest.raises(PoolExhausted):
            client.get(f"{name}:x")
        holder.join()
        assert client.get(f"{name}:x") is None
    finally:
        client.close()


def test_interrupted_commands_do_not_leak_pool_slots(redis_url, runtime, name):
    """The reason for gevent's LifoQueue: fibers interrupted while holding or waiting for
    a connection must give their slots back."""
    client = make(redis_url, runtime, name, max_connections=2, max_wait=1.0)
    try:
        for _ in range(20):
            with gevent.Timeout(0.01, False):
                client.blpop([f"{name}:never"], timeout=1)
        pair = [runtime.spawn(client.blpop, [f"{name}:never"], timeout=0.05, name=f"p{i}") for i in range(2)]
        gevent.joinall(pair, raise_error=True)
        assert client.client.connection_pool.pool.qsize() == 2
    finally:
        client.close()


def test_socket_timeout_is_a_query_timeout(redis_url, runtime, name):
    client = make(redis_url, runtime, name, socket_timeout=0.1, retries=0)
    try:
        with pytest.raises(QueryTimeout):
            client.blpop([f"{name}:never"], timeout=1)  # asks for longer than socket_timeout
        assert client.ping()
    finally:
        client.close()


def test_nothing_listening_is_unavailable(runtime):
    client = RedisClient("redis://127.0.0.1:1/0", runtime=runtime, connect_timeout=0.5, retries=0)
    with pytest.raises(DbUnavailable):
        client.open(wait=True)
    assert client.health()["status"] == "degraded"
    assert client.ping() is False
    client.close()


def test_pubsub_delivers_while_other_fibers_run(redis, raw, runtime, name, ticker):
    got = []
    arrived = gevent.event.Event()

    def on_message(m):
        got.append((m["channel"], m["data"]))
        if len(got) == 3:
            arrived.set()

    sub = redis.subscribe(f"{name}:a", patterns=[f"{name}:p.*"], callback=on_message)
    assert sub.wait_ready(5)
    assert any(f.name.startswith("redis-sub:") for f in runtime.fibers())
    busy = runtime.spawn(redis.blpop, [f"{name}:never"], timeout=0.3, name="busy")
    gevent.sleep(0)
    ticks = ticker.count
    assert redis.publish(f"{name}:a", "one") == 1
    assert redis.publish(f"{name}:p.x", "two") == 1
    assert redis.publish(f"{name}:a", "three") == 1
    assert arrived.wait(5)
    assert not busy.dead  # delivered while the BLPOP was still waiting
    busy.join()
    assert got == [(f"{name}:a".encode(), b"one"), (f"{name}:p.x".encode(), b"two"), (f"{name}:a".encode(), b"three")]
    assert ticker.count > ticks

    # The subscriber's connection is killed: redis-py reconnects and subscribes again.
    killed = {c["id"] for c in our_clients(raw, redis.client_name) if c["cmd"] in ("subscribe", "psubscribe", "ping")}
    assert killed
    for cid in killed:
        raw.client_kill_filter(_id=cid)
    wait_for(lambda: any(c["id"] not in killed and c["cmd"] == "psubscribe" for c in our_clients(raw, redis.client_name)),
             what="the subscription to come back")
    arrived.clear()
    got.clear()
    for word in ("4", "5", "6"):
        redis.publish(f"{name}:a", word)
    assert arrived.wait(5)
    assert [d for _, d in got] == [b"4", b"5", b"6"]
    redis.close()
    assert not sub.ready


def test_subscription_survives_an_outage(redis_url, runtime, name):
    """Redis unreachable for a while: the supervised fiber backs off, retries, and
    subscribes again once the server is back."""
    from urllib.parse import urlparse

    from tests.db.proxy import Proxy

    target = urlparse(redis_url)
    proxy = Proxy(runtime, (target.hostname or "127.0.0.1", target.port or 6379))
    client = make(f"redis://127.0.0.1:{proxy.port}{target.path or '/0'}", runtime, name)
    direct = make(redis_url, runtime, name + "-direct")
    try:
        sub = client.subscribe(f"{name}:o")
        assert sub.wait_ready(5)
        proxy.cut()
        wait_for(lambda: sub.restarts >= 1 and not sub.ready, what="the subscription to notice")
        assert sub.health()["status"] == "degraded" and sub.last_error is not None
        assert client.health()["status"] == "degraded" and client.health()["subscriptions_down"] == 1
        proxy.restore()
        assert sub.wait_ready(10)
        assert direct.publish(f"{name}:o", "back") == 1
        assert sub.channel.get(timeout=5)["data"] == b"back"
        assert client.health()["status"] == "ok"
    finally:
        client.close()
        direct.close()
        proxy.stop()


def test_pubsub_into_a_channel(redis, name):
    sub = redis.subscribe(f"{name}:c")
    assert sub.wait_ready(5)
    redis.publish(f"{name}:c", "hello")
    assert sub.channel.get(timeout=5)["data"] == b"hello"
    sub.stop()
    assert sub.channel.is_closed()


def test_redis_goes_away_and_comes_back(redis_url, runtime, name, ticker):
    from urllib.parse import urlparse

    from tests.db.proxy import Proxy

    target = urlparse(redis_url)
    proxy = Proxy(runtime, (target.hostname or "127.0.0.1", target.port or 6379))
    client = make(f"redis://127.0.0.1:{proxy.port}{target.path or '/0'}", runtime, name,
                  connect_timeout=1.0, health_interval=0.05)
    try:
        assert any(f.name == "redis-health" for f in runtime.fibers())
        assert client.set(f"{name}:k", "1", ex=10)
        proxy.cut()
        ticks = ticker.count
        with pytest.raises(DbUnavailable):
            client.get(f"{name}:k")
        assert client.health()["status"] == "degraded"
        # The loop still turns after the failure (a failing command that fails fast need
        # not yield, so only "after", not "during", is certain).
        wait_for(lambda: ticker.count > ticks, timeout=10, what="the ticker fiber to run again")
        proxy.restore()
        # nobody calls: the health fiber's PING notices the recovery
        wait_for(lambda: client.health()["status"] == "ok", timeout=10, what="the health fiber to see Redis back")
        assert client.get(f"{name}:k") == b"1"
    finally:
        client.close()
        proxy.stop()
    assert not any(f.name == "redis-health" for f in runtime.fibers())
