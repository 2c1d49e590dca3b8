"""The connection's read watcher: started at the first wait and left running between
keep-alive requests (gevent's hub.wait started and stopped one per wait, and a stop and
a start in different loop iterations cost an epoll_ctl per request), stopped when it
fires while a handler runs (level-triggered: pipelined bytes would otherwise wake the
loop on every iteration), closed with the connection."""
import gevent
import gevent.event

from fiberapp.http import Router

from .helpers import wait_for


def get(path):
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode()


def only_connection(server):
    wait_for(lambda: len(server._connections) == 1, what="the connection")
    return next(iter(server._connections))


def answered_once(serve, connect, router):
    """Serve router (with GET /x -> "ok" added), connect and have one GET /x answered:
    (server, client, the server's connection)."""
    router.get("/x")(lambda request: "ok")
    server = serve(router)
    c = connect(server)
    c.send(get("/x"))
    assert c.read_response()["body"] == b"ok"
    return server, c, only_connection(server)


def test_keep_alive_requests_reuse_one_running_read_watcher(serve, connect):
    server, c, conn = answered_once(serve, connect, Router())
    wait_for(lambda: conn._reader is not None, what="the connection to wait for its next request")
    watcher = conn._watcher
    assert watcher.active
    for _ in range(3):
        c.send(get("/x"))
        assert c.read_response()["body"] == b"ok"
        wait_for(lambda: conn._reader is not None, what="the connection to wait again")
        assert conn._watcher is watcher and watcher.active  # never stopped in between


def test_bytes_arriving_while_a_handler_runs_stop_the_watcher_until_the_next_read(serve, connect):
    entered, gate = gevent.event.Event(), gevent.event.Event()

    def slow(request):
        entered.set()
        gate.wait()
        return "slow"

    router = Router()
    router.get("/slow")(slow)
    server, c, conn = answered_once(serve, connect, router)  # the watcher is running now
    c.send(get("/slow"))
    assert entered.wait(timeout=5)
    watcher = conn._watcher
    c.send(get("/x"))  # pipelined while the handler waits: the watcher fires, nobody reads
    wait_for(lambda: not watcher.active, what="the watcher to stop itself")
    gate.set()
    assert [c.read_response()["body"] for _ in range(2)] == [b"slow", b"ok"]
    wait_for(lambda: conn._reader is not None, what="the connection to wait again")
    assert conn._watcher is watcher and watcher.active  # restarted by the next wait


def test_a_closed_connection_closes_its_watcher(serve, connect):
    server, c, conn = answered_once(serve, connect, Router())
    watcher = conn._watcher
    c.close()
    wait_for(lambda: not server._connections, what="the server to drop the connection")
    assert conn._watcher is None and not watcher.active
