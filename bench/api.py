"""HTTP API benchmarks: POST put throughput under wrk, and one sequential client's
put + take + ack cycles over keep-alive, with beanstalkd as the peer in the same run.

    .venv/bin/python -m bench.api [--duration 10] [--runs 3] [--wal-mode write]
                                  [--connections 50] [--no-beanstalkd] [--http-client]

The sequential client is a lean raw-socket keep-alive client (LeanClient: requests encoded
once, answers framed by Content-Length, the take's answer decoded with orjson), the same
shape as the beanstalkd client; --http-client also runs the cycle with http.client.

The server (runtime + store + persistence + HTTP server + API, assembled here) runs in a
child process pinned to CPU 0 (taskset); wrk and the Python client are pinned to CPU 1.
Figures are medians of --runs runs. The machine has 2 cores shared with other engineers'
tests, so absolute numbers are noisy; the ratio to beanstalkd in the same run is the
figure to compare; the server's CPU time per request (psutil) is printed beside each rate,
since on a shared machine it says more than the wall clock. The run starts with the API
layer measured in-process (router.dispatch, no socket) against the bare store, to separate
the API's own cost from the HTTP server's. Child entry points:

    .venv/bin/python -m bench.api serve --port-file F [--wal-mode write] [--data-dir D]
    .venv/bin/python -m bench.api inproc [--cycles 10000]
    .venv/bin/python -m bench.api client api|beanstalkd PORT SECONDS
    .venv/bin/python -m bench.api ops PORT health|put|cycle N     (N sequential operations)

Instructions per request (noise-free on a shared machine): `instr` runs the server under
`valgrind --tool=cachegrind --cache-sim=no` twice, drives N1 and then N2 sequential
operations with `ops`, and reports (Ir(N2) - Ir(N1)) / (N2 - N1), so start-up cancels out:

    .venv/bin/python -m bench.api instr --kind cycle --counts 100,500
"""
import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from bench.common import cpu_pressure

PAYLOAD = "x" * 88  # {"data":"xxx..."} is 100 bytes of JSON body
BODY = json.dumps({"data": PAYLOAD})
assert len(BODY) == 100, len(BODY)

WRK_LUA = """
wrk.method = "POST"
wrk.body   = '%s'
wrk.headers["Content-Type"] = "application/json"
""" % BODY


# -- the server (child process) ----------------------------------------------------------

def serve(args):
    from fiberapp.runtime.patch import patch_all

    patch_all()
    import gevent
    from prometheus_client import CollectorRegistry

    from fiberapp import api
    from fiberapp.http.router import Router
    from fiberapp.http.server import HTTPServer
    from fiberapp.runtime.clock import SystemClock
    from fiberapp.runtime.fiber import Runtime

    clock = SystemClock()
    runtime = Runtime(clock=clock)
    runtime.start()
    persistence = None
    if args.wal_mode == "none":
        from queues.store import Store

        store = Store(clock=clock)
        store.start(runtime)
    else:
        from queues.persist import open_store

        store, persistence = open_store(args.data_dir, clock=clock, runtime=runtime, wal_mode=args.wal_mode)
    registry = CollectorRegistry()
    router = Router()
    handle = api.install(router, store=store, runtime=runtime, persistence=persistence, registry=registry)
    server = HTTPServer(router, "127.0.0.1", 0, clock=clock, registry=registry)
    host, port = server.start()
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(port))
    os.rename(args.port_file + ".tmp", args.port_file)
    stop = gevent.event.Event()
    gevent.signal_handler(signal.SIGTERM, stop.set)
    stop.wait()
    server.stop(1.0)
    handle.stop()
    if persistence is not None:
        persistence.close()


def inproc(args):
    """The API layer alone: router.dispatch of put + take + ack (no socket, no HTTP server),
    CPU seconds per cycle, with the store's null journal. Separates what the API costs from
    what the HTTP server and the kernel cost."""
    from fiberapp.runtime.patch import patch_all

    patch_all()
    from prometheus_client import CollectorRegistry

    from fiberapp import api
    from fiberapp.http.request import Request
    from fiberapp.http.router import Router
    from fiberapp.runtime.clock import SystemClock
    from fiberapp.runtime.fiber import Runtime
    from queues.store import Store

    clock = SystemClock()
    runtime = Runtime(clock=clock)
    store = Store(clock=clock)
    router = Router()
    handle = api.install(router, store=store, runtime=runtime, registry=CollectorRegistry(), start=False)
    store.create_tube("c", "fifottl")
    headers = [(b"Content-Type", b"application/json"), (b"X-Fiberapp-Session", b"bench")]
    body = BODY.encode()

    def cycle():
        router.dispatch(Request("POST", "/api/v1/tubes/c/tasks", "", headers, body))
        resp = router.dispatch(Request("POST", "/api/v1/tubes/c/take", "", headers, b'{"timeout":0}'))
        task_id = resp.json_body()["task"]["id"]
        resp = router.dispatch(Request("POST", f"/api/v1/tubes/c/tasks/{task_id}/ack", "", headers, b""))
        assert resp.status == 200

    def store_cycle(tube=store.tube("c")):
        tube.put(PAYLOAD)
        task = tube.take(0, session="s")
        tube.ack(task.id, session="s")

    out = []
    for fn in (cycle, store_cycle):
        for _ in range(2000):
            fn()
        runs = []
        for _ in range(5):
            c0 = time.process_time()
            for _ in range(args.cycles):
                fn()
            runs.append((time.process_time() - c0) / args.cycles)
        out.append(statistics.median(runs))
    handle.stop()
    print(out[0], out[1])


PINNED = {"server": ["taskset", "-c", "0"], "client": ["taskset", "-c", "1"]}
UNPINNED = {"server": [], "client": []}


def start_server(wal_mode, data_dir, pin):
    port_file = os.path.join(data_dir, "port")
    cmd = [*pin["server"], sys.executable, "-m", "bench.api", "serve", "--port-file", port_file,
           "--wal-mode", wal_mode, "--data-dir", os.path.join(data_dir, "data")]
    proc = subprocess.Popen(cmd)
    deadline = time.monotonic() + 30
    while not os.path.exists(port_file):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the benchmark server did not start")
        time.sleep(0.05)  # a benchmark driver, not a test: polling a file is fine here
    with open(port_file) as f:
        return proc, int(f.read())


# -- clients -----------------------------------------------------------------------------

def call(conn, method, path, body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    return resp.status, data, resp


def run_wrk(port, duration, connections, script, pin):
    out = subprocess.run(
        [*pin["client"], "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", script,
         f"http://127.0.0.1:{port}/api/v1/tubes/wrk/tasks"],
        capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    p99 = _ms(re.search(r"99%\s+([\d.]+\w+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {"rps": rps, "requests": total, "p99_ms": p99, "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": errors.group(0) if errors else ""}


def _ms(text):
    value, unit = re.fullmatch(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


class LeanClient:
    """A lean keep-alive HTTP/1.1 client: one socket (TCP_NODELAY), requests encoded once,
    each answer read with recv_into and framed by its Content-Length. What one sequential
    Python client costs when it does not spend its time in http.client (whose request
    building and header parsing cost more CPU per request than the server's own work)."""

    def __init__(self, port, session="bench-client"):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.head = (b"Host: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"X-Fiberapp-Session: " + session.encode() + b"\r\n")
        self.buf = bytearray(1 << 16)
        self.view = memoryview(self.buf)

    def request(self, method, path, body=b""):
        """The request's bytes, encoded once by the caller and sent many times."""
        return (b"%s %s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s"
                % (method.encode(), path.encode(), self.head, len(body), body))

    def call(self, request):
        """Send one request, read its whole answer: (status, body bytes)."""
        self.sock.sendall(request)
        buf, recv_into = self.buf, self.sock.recv_into
        n = recv_into(buf)
        end = buf.find(b"\r\n\r\n", 0, n)
        while end < 0:
            got = recv_into(self.view[n:])
            if not got:
                raise ConnectionError("the server closed the connection")
            n += got
            end = buf.find(b"\r\n\r\n", 0, n)
        i = buf.find(b"\r\nContent-Length: ", 0, end)
        total = end + 4 + (int(buf[i + 18:buf.find(b"\r", i + 18, end + 2)]) if i >= 0 else 0)
        while n < total:
            got = recv_into(self.view[n:])
            if not got:
                raise ConnectionError("the server closed the connection")
            n += got
        if n != total:
            raise AssertionError("the server answered more than was asked")
        return int(buf[9:12]), bytes(buf[end + 4:total])

    def close(self):
        self.sock.close()


def cycles_client(port, seconds):
    """One sequential client (LeanClient, keep-alive): put + take + ack as fast as it can,
    each request waiting for the previous answer. Returns (cycles/s, cycles, p50 and p99 of
    one cycle in ms)."""
    import orjson

    c = LeanClient(port)
    put = c.request("POST", "/api/v1/tubes/cycle/tasks", BODY.encode())
    take = c.request("POST", "/api/v1/tubes/cycle/take", b'{"timeout":0}')
    ack = c.request("POST", "/api/v1/tubes/cycle/tasks/%d/ack")  # "%d": filled per cycle
    return _cycles(c, put, take, ack, seconds, orjson.loads)


def _cycles(c, put, take, ack, seconds, loads):
    call, clock = c.call, time.perf_counter
    times = []
    n = 0
    start = t0 = clock()
    end = start + seconds
    while True:
        status, data = call(put)
        assert status == 201, (status, data)
        status, data = call(take)
        assert status == 200, (status, data)
        status, data = call(ack % loads(data)["task"]["id"])
        assert status == 200, (status, data)
        t1 = clock()
        times.append(t1 - t0)
        t0 = t1
        n += 1
        if t1 > end:
            break
    c.close()
    return _cycle_summary(times, n, start, t0)


def _cycle_summary(times, n, start, end):
    """(cycles/s, cycles, p50 ms, p99 ms) of a sequential client's cycle times."""
    times.sort()
    return n / (end - start), n, times[len(times) // 2] * 1e3, times[int(len(times) * 0.99)] * 1e3


def httpclient_cycles(port, seconds):
    """The same cycle with http.client (what an unhurried script would use), for comparison."""
    conn = http.client.HTTPConnection("127.0.0.1", port)
    session = {"X-Fiberapp-Session": "bench-client", "Content-Type": "application/json"}
    body = BODY.encode()
    take = b'{"timeout":0}'
    n = 0
    end = time.perf_counter() + seconds
    start = time.perf_counter()
    while True:
        status, _, _ = call(conn, "POST", "/api/v1/tubes/cycle/tasks", body, session)
        assert status == 201, status
        status, data, _ = call(conn, "POST", "/api/v1/tubes/cycle/take", take, session)
        assert status == 200, (status, data)
        task_id = json.loads(data)["task"]["id"]
        status, _, _ = call(conn, "POST", f"/api/v1/tubes/cycle/tasks/{task_id}/ack", None, session)
        assert status == 200, status
        n += 1
        if n % 64 == 0 and time.perf_counter() > end:
            break
    return n / (time.perf_counter() - start), n, float("nan"), float("nan")


def beanstalkd_cycles(port, seconds):
    """The same cycle against beanstalkd with a tiny raw-socket client (same shape: one
    sequential connection, requests encoded once)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = s.makefile("rb")
    data = PAYLOAD.encode() + b"x" * (100 - len(PAYLOAD))
    put = b"put 0 0 60 %d\r\n%s\r\n" % (len(data), data)
    take = b"reserve-with-timeout 0\r\n"
    clock = time.perf_counter
    times = []
    n = 0
    start = t0 = clock()
    end = start + seconds
    while True:
        s.sendall(put)
        line = f.readline()
        assert line.startswith(b"INSERTED"), line
        s.sendall(take)
        line = f.readline()
        assert line.startswith(b"RESERVED"), line
        job_id, size = line.split()[1:3]
        f.read(int(size) + 2)
        s.sendall(b"delete %s\r\n" % job_id)
        line = f.readline()
        assert line == b"DELETED\r\n", line
        t1 = clock()
        times.append(t1 - t0)
        t0 = t1
        n += 1
        if t1 > end:
            break
    s.close()
    return _cycle_summary(times, n, start, t0)


def cycles_in_child(kind, port, seconds, pin):
    """Run a client pinned to CPU 1 in its own process; returns (cycles/s, cycles, p50 ms, p99 ms)."""
    out = subprocess.run([*pin["client"], sys.executable, "-m", "bench.api", "client", kind,
                          str(port), str(seconds)], capture_output=True, text=True, check=True).stdout
    rate, n, p50, p99 = out.strip().splitlines()[-1].split()
    return float(rate), int(n), float(p50), float(p99)


def start_beanstalkd(tmp, pin):
    exe = shutil.which("beanstalkd")
    if exe is None:
        return None, None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    binlog = os.path.join(tmp, "beanstalkd")
    os.makedirs(binlog)
    # -b: binlog (written, fsync never: -F is the default), like wal_mode = write.
    proc = subprocess.Popen([*pin["server"], exe, "-l", "127.0.0.1", "-p", str(port), "-b", binlog])
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            return proc, port
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def cpu_seconds(pid):
    """User + system CPU seconds a process has used so far (psutil)."""
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def median(values):
    return statistics.median(values) if values else float("nan")


def ops_client(port, kind, n):
    """N sequential operations over one keep-alive connection (for instruction counts),
    with the same lean client as the cycles figure."""
    import orjson

    c = LeanClient(port)
    status, data = c.call(c.request("PUT", "/api/v1/tubes/ops", b'{"driver":"fifottl"}'))
    assert status in (200, 201), data
    health = c.request("GET", "/health")
    put = c.request("POST", "/api/v1/tubes/ops/tasks", BODY.encode())
    take = c.request("POST", "/api/v1/tubes/ops/take", b'{"timeout":0}')
    ack = c.request("POST", "/api/v1/tubes/ops/tasks/%d/ack")
    for _ in range(n):
        if kind == "health":
            status, _ = c.call(health)
            assert status == 200, status
            continue
        status, data = c.call(put)
        assert status == 201, (status, data)
        if kind == "cycle":
            status, data = c.call(take)
            assert status == 200, (status, data)
            status, data = c.call(ack % orjson.loads(data)["task"]["id"])
            assert status == 200, (status, data)
    c.close()


def instructions(kind, counts):
    """Server instructions per operation: cachegrind runs at two operation counts, differenced."""
    totals = []
    for n in counts:
        tmp = tempfile.mkdtemp(prefix="bench-api-instr-")
        try:
            out = os.path.join(tmp, "cg.out")
            port_file = os.path.join(tmp, "port")
            proc = subprocess.Popen(
                ["valgrind", "--tool=cachegrind", "--cache-sim=no", f"--cachegrind-out-file={out}", sys.executable,
                 "-m", "bench.api", "serve", "--port-file", port_file, "--data-dir", os.path.join(tmp, "data")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 600  # start-up under valgrind on a busy machine is slow
            while not os.path.exists(port_file):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the benchmark server did not start under valgrind")
                time.sleep(0.1)
            with open(port_file) as f:
                ops_client(int(f.read()), kind, n)
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
            with open(out) as f:
                totals.append(int(re.search(r"^summary: (\d+)", f.read(), re.M).group(1)))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    (n1, n2), (i1, i2) = counts, totals
    return (i2 - i1) / (n2 - n1)


def main():
    parser = argparse.ArgumentParser(prog="python -m bench.api")
    sub = parser.add_subparsers(dest="cmd")
    s = sub.add_parser("serve")
    s.add_argument("--port-file", required=True)
    s.add_argument("--wal-mode", default="write")
    s.add_argument("--data-dir", default="bench-data")
    i = sub.add_parser("inproc")
    i.add_argument("--cycles", type=int, default=10000)
    c = sub.add_parser("client")
    c.add_argument("kind")
    c.add_argument("port", type=int)
    c.add_argument("seconds", type=float)
    o = sub.add_parser("ops")
    o.add_argument("port", type=int)
    o.add_argument("kind", choices=("health", "put", "cycle"))
    o.add_argument("n", type=int)
    m = sub.add_parser("instr")
    m.add_argument("--kind", choices=("health", "put", "cycle"), default="cycle")
    m.add_argument("--counts", default="100,500", help="two operation counts N1,N2")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--wal-mode", default="write", choices=("none", "write", "fsync"))
    parser.add_argument("--no-beanstalkd", action="store_true")
    parser.add_argument("--http-client", action="store_true",
                        help="also run the cycle with http.client (the figure before the lean client)")
    parser.add_argument("--no-pin", action="store_true",
                        help="let the scheduler place server and clients (no taskset)")
    args = parser.parse_args()
    if args.cmd == "serve":
        return serve(args)
    if args.cmd == "inproc":
        return inproc(args)
    if args.cmd == "ops":
        return ops_client(args.port, args.kind, args.n)
    if args.cmd == "instr":
        counts = tuple(int(x) for x in args.counts.split(","))
        print(f"{args.kind}: {instructions(args.kind, counts):,.0f} server instructions per operation "
              f"(cachegrind, N = {counts[0]} and {counts[1]})")
        return
    if args.cmd == "client":
        fn = {"api": cycles_client, "http.client": httpclient_cycles, "beanstalkd": beanstalkd_cycles}[args.kind]
        print(*fn(args.port, args.seconds))
        return

    pin = UNPINNED if args.no_pin else PINNED
    out = subprocess.run([sys.executable, "-m", "bench.api", "inproc"], capture_output=True, text=True,
                         check=True).stdout
    api_cycle, store_cycle = map(float, out.split())
    print(f"in-process (no HTTP): API + store {api_cycle * 1e6:.1f} us CPU per put+take+ack cycle, "
          f"store alone {store_cycle * 1e6:.1f} us (null journal): the API layer costs "
          f"{(api_cycle - store_cycle) / 3 * 1e6:.1f} us per request", flush=True)
    tmp = tempfile.mkdtemp(prefix="bench-api-")
    proc, port = start_server(args.wal_mode, tmp, pin)
    bproc = None
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port)
        for tube in ("wrk", "cycle"):
            status, data, _ = call(conn, "PUT", f"/api/v1/tubes/{tube}", json.dumps({"driver": "fifottl"}),
                                   {"Content-Type": "application/json"})
            assert status in (200, 201), data
        script = os.path.join(tmp, "put.lua")
        with open(script, "w") as f:
            f.write(WRK_LUA)
        if not args.no_beanstalkd:
            bproc, bport = start_beanstalkd(tmp, pin)
        # Besides wall-clock rates, the server's own CPU time per request/cycle (psutil) is
        # recorded: on a shared, busy machine it says what one dedicated core would do.
        puts, cycles, peer, slow = [], [], [], []
        put_cpu, cycle_cpu, peer_cpu = [], [], []
        for i in range(args.runs):
            c0 = cpu_seconds(proc.pid)
            puts.append(run_wrk(port, args.duration, args.connections, script, pin))
            put_cpu.append((cpu_seconds(proc.pid) - c0) / puts[-1]["requests"])
            call(conn, "POST", "/api/v1/tubes/wrk/truncate")
            c0 = cpu_seconds(proc.pid)
            rate, n, p50, p99 = cycles_in_child("api", port, args.duration, pin)
            cycles.append((rate, p50, p99))
            cycle_cpu.append((cpu_seconds(proc.pid) - c0) / n)
            line = (f"run {i + 1}: put {puts[-1]['rps']:.0f} req/s (p99 {puts[-1]['p99_ms']:.2f} ms, "
                    f"non-2xx {puts[-1]['non2xx']}, server CPU {put_cpu[-1] * 1e6:.0f} us/req); "
                    f"cycles {rate:.0f}/s (p50 {p50 * 1e3:.0f} us, server CPU {cycle_cpu[-1] * 1e6:.0f} us/cycle)")
            if bproc is not None:
                c0 = cpu_seconds(bproc.pid)
                rate, n, p50, p99 = cycles_in_child("beanstalkd", bport, args.duration, pin)
                peer.append((rate, p50, p99))
                peer_cpu.append((cpu_seconds(bproc.pid) - c0) / n)
                line += f"; beanstalkd {rate:.0f}/s (p50 {p50 * 1e3:.0f} us, CPU {peer_cpu[-1] * 1e6:.0f} us/cycle)"
            if args.http_client:
                rate, _, _, _ = cycles_in_child("http.client", port, args.duration, pin)
                slow.append(rate)
                line += f"; http.client {rate:.0f}/s"
            print(line, flush=True)
        print(f"\nwal_mode={args.wal_mode}, {'not pinned' if args.no_pin else 'server on CPU 0, clients on CPU 1'}, "
              f"{args.connections} connections, {args.duration}s x {args.runs} runs (medians)")
        pc = median(put_cpu)
        print(f"POST put (100-byte body):  {median([p['rps'] for p in puts]):,.0f} req/s, "
              f"p99 {median([p['p99_ms'] for p in puts]):.2f} ms; server CPU {pc * 1e6:.1f} us/request "
              f"(= {1 / pc:,.0f} req/s per dedicated core)")
        c, cc = median([x[0] for x in cycles]), median(cycle_cpu)
        print(f"put+take+ack, 1 sequential client (lean raw socket, keep-alive): {c:,.0f} cycles/s, "
              f"cycle p50 {median([x[1] for x in cycles]) * 1e3:.0f} us / p99 {median([x[2] for x in cycles]) * 1e3:.0f} us; "
              f"server CPU {cc * 1e6:.1f} us/cycle (busy {c * cc * 100:.0f} % of the cycle)")
        if slow:
            print(f"  the same with http.client: {median(slow):,.0f} cycles/s")
        if peer:
            b, bc = median([x[0] for x in peer]), median(peer_cpu)
            print(f"beanstalkd (binlog, same client shape): {b:,.0f} cycles/s, "
                  f"cycle p50 {median([x[1] for x in peer]) * 1e3:.0f} us, CPU {bc * 1e6:.1f} us/cycle; "
                  f"ratio fiberapp/beanstalkd {c / b:.2f} (wall), {bc / cc:.2f} (CPU per cycle)")
        print(f"load average at the end: {os.getloadavg()}; CPU pressure (PSI some avg10) {cpu_pressure():.0f} %")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        if bproc is not None:
            bproc.terminate()
            bproc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
