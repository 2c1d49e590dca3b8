"""Server instructions per seed-page request, counted by callgrind: the figure to decide by on a
shared machine (wall-clock CPU per request moves 2x with the load; instruction counts do not).

    .venv/bin/python -m bench.seed_instructions                  # fiberapp, the bare floor, the page alone
    .venv/bin/python -m bench.seed_instructions --only fiberapp --requests 3000

The page is bench/seed_experiment.py's: work() (~17 us of Python) + json, then one
request/answer to the C delay server (answering after 5 ms). Each server runs under
``valgrind --tool=callgrind`` on CPU 0 (delay server and client on CPU 1); a closed-loop
keep-alive client (--conns connections, one request in flight on each) sends 1,000 warm-up
requests (at least one per connection), the counters are zeroed (callgrind_control -z),
--requests more are sent on the same connections and the counters dumped (-d). Printed: instructions per request. ``--syscalls`` runs the server
natively instead and counts its system calls during the counted requests with
``strace -c -f -p PID`` (under valgrind its own polling calls would mix in).

- ``fiberapp``: ``fiberapp run bench/seed_experiment.py`` (the app as deployed: metrics
  registry, CPU accounting, watchdog);
- ``bare``: the floor, a minimal gevent StreamServer + httptools loop serving the same page
  through a plain gevent socket (this module, ``--serve-bare PORT``);
- ``page``: work() + page_body() alone, in-process (cachegrind at 0 and N calls).

Under callgrind the server is ~50x slower, so it is saturated and batches more events per
loop iteration than a real run: use the figures to compare code, not to predict req/s. How
many events a loop iteration batches depends on timing, so with many connections the figure
moves by ~2 % from run to run; ``--conns 1`` (one request at a time, one event per
iteration) repeats to within a few instructions and is the one to judge small changes by.
"""
import argparse
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time

from bench.common import stop_process

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.dirname(sys.executable)


class Client:
    """Keep-alive connections to the server, one request in flight on each. The same
    connections serve the warm-up and the counted requests: with 1,000 connections a
    fresh set per phase would charge the counted requests with 1,000 accepts, greenlet
    spawns and closes (about 100k instructions per request at 3 requests per connection,
    where wrk's connections each carry about a hundred)."""

    def __init__(self, port, path, conns):
        self.req = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
        self.sel = selectors.DefaultSelector()
        self.socks = []
        for _ in range(conns):
            s = socket.create_connection(("127.0.0.1", port))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.socks.append(s)
            self.sel.register(s, selectors.EVENT_READ, bytearray())

    def drive(self, n):
        """Exactly n GETs, at most one in flight per connection."""
        req = self.req
        sent = done = bad = 0
        for s in self.socks[:n]:
            s.sendall(req)
            sent += 1
        while done < n:
            for key, _ in self.sel.select(120):
                s, buf = key.fileobj, key.data
                data = s.recv(65536)
                if not data:
                    raise SystemExit("the server closed a connection")
                buf += data
                while (h := buf.find(b"\r\n\r\n")) >= 0:
                    head = bytes(buf[:h]).lower()
                    length = int(re.search(rb"content-length: *(\d+)", head).group(1))
                    if len(buf) < h + 4 + length:
                        break
                    bad += not head.startswith(b"http/1.1 200")
                    del buf[: h + 4 + length]
                    done += 1
                    if sent < n:
                        s.sendall(req)
                        sent += 1
        if bad:
            raise SystemExit(f"{bad} answers were not 200")

    def close(self):
        for s in self.socks:
            s.close()


def wait_port(port, proc, timeout=600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode}) before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)  # start-up under valgrind takes a while
    raise SystemExit(f"nothing listened on port {port}")


def totals(path):
    """Instructions from a callgrind dump's totals line."""
    events = totals_line = None
    with open(path) as f:
        for line in f:
            if line.startswith("events:"):
                events = line.split()[1:]
            elif line.startswith("totals:"):
                totals_line = [int(x) for x in line.split()[1:]]
    return dict(zip(events, totals_line))["Ir"]


def count_server(kind, args, tmp, delay_port, n_work):
    from bench.common import free_port

    port = free_port()
    out = os.path.join(tmp, f"callgrind.{kind}")
    env = dict(os.environ, SEED_WORK_N=str(n_work), SEED_WAIT="delay", SEED_DELAY_PORT=str(delay_port),
               PYTHONPATH=ROOT)
    if kind == "bare":
        target, path = [sys.executable, "-m", "bench.seed_instructions", "--serve-bare", str(port)], "/"
    else:
        cfg = os.path.join(tmp, "fiberapp.toml")
        with open(cfg, "w") as f:
            extra = "".join(f"{line}\n" for line in args.set)
            f.write('wal_mode = "write"\nlog_level = "WARNING"\nwatchdog_limit = 1.0\n' + extra
                    + '\n[http]\nmax_connections = 25000\n')
        data = tempfile.mkdtemp(dir=tmp)
        target = [os.path.join(VENV_BIN, "fiberapp"), "run", os.path.join(ROOT, "bench", "seed_experiment.py"),
                  "--config", cfg, "--listen", f"127.0.0.1:{port}", "--data-dir", data]
        path = "/seed"
    if args.syscalls:
        return count_syscalls(target, path, port, env, args)
    cmd = ["taskset", "-c", str(args.server_cpu), "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
           "--dump-instr=no"] + target
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
        client = Client(port, path, args.conns)
        client.drive(max(1000, args.conns))
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True, capture_output=True)
        client.drive(args.requests)
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)
        client.close()
        dump = out + ".1"
        deadline = time.monotonic() + 60
        while not os.path.exists(dump) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)  # the dump is written in full before callgrind_control returns; be safe
        ir = totals(dump)
        if args.keep:
            os.makedirs(args.keep, exist_ok=True)
            kept = os.path.join(args.keep, f"callgrind.{kind}.out")
            with open(dump, "rb") as src, open(kept, "wb") as dst:
                dst.write(src.read())
            print(f"{kind:9s} callgrind dump kept: {kept} (callgrind_annotate --inclusive=yes {kept})", flush=True)
    finally:
        stop_process(proc, 60)
    return ir / args.requests


def count_syscalls(target, path, port, env, args):
    """--syscalls: the server runs natively; strace -c -f counts its system calls during
    the counted requests. Returns {syscall: (calls, errors) per request}."""
    proc = subprocess.Popen(["taskset", "-c", str(args.server_cpu)] + target, env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = os.path.join(tempfile.mkdtemp(), "strace.txt")
    try:
        wait_port(port, proc)
        client = Client(port, path, args.conns)
        client.drive(max(2000, args.conns))
        tracer = subprocess.Popen(["strace", "-c", "-f", "-p", str(proc.pid), "-o", out],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # strace attaches to every thread before the counted requests
        client.drive(args.requests)
        tracer.send_signal(signal.SIGINT)
        tracer.wait(60)
        client.close()
    finally:
        stop_process(proc, 60)
    counts = {}
    with open(out) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 5 and parts[3].isdigit() and parts[-1] != "total":
                errors = int(parts[4]) if len(parts) == 6 else 0
                counts[parts[-1]] = (int(parts[3]) / args.requests, errors / args.requests)
    return counts


PAGE_LOOP = "import sys; from bench.seed_experiment import work, page_body\nfor _ in range({n}): page_body(work({w}))"


def count_page(n_work, calls=5000):
    irs = []
    for n in (0, calls):
        res = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
                              sys.executable, "-c", PAGE_LOOP.format(n=n, w=n_work)],
                             cwd=ROOT, capture_output=True, text=True, check=True)
        irs.append(int(re.search(r"I\s+refs:\s+([\d,]+)", res.stderr).group(1).replace(",", "")))
    return (irs[1] - irs[0]) / calls


def serve_bare(port):
    """The floor: gevent StreamServer + httptools, the page, a plain gevent socket to the
    delay server (a LIFO list of idle connections), one sendall per batch of answers."""
    from gevent import monkey

    monkey.patch_all()
    from gevent.server import StreamServer
    from httptools import HttpRequestParser

    from bench.seed_experiment import page_body, work

    n_work = int(os.environ["SEED_WORK_N"])
    delay_port = int(os.environ["SEED_DELAY_PORT"])
    idle = []

    def wait_delay():
        if idle:
            s = idle.pop()
        else:
            s = socket.create_connection(("127.0.0.1", delay_port))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(b"w\n")
        if s.recv(64) != b"ok\n":
            raise RuntimeError("delay server hung up")
        idle.append(s)

    class Counter:
        done = 0

        def on_message_complete(self):
            self.done += 1

    def handle(sock, addr):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        counter = Counter()
        parser = HttpRequestParser(counter)
        while data := sock.recv(65536):
            parser.feed_data(data)
            out = []
            for _ in range(counter.done):
                body = page_body(work(n_work))
                wait_delay()
                out.append(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                           % (len(body), body))
            counter.done = 0
            sock.sendall(b"".join(out))

    StreamServer(("127.0.0.1", port), handle, backlog=4096).serve_forever()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=3000, help="counted requests per server (after 1,000 warm-up)")
    p.add_argument("--conns", type=int, default=50)
    p.add_argument("--only", default="fiberapp,bare,page")
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--load-cpu", type=int, default=1)
    p.add_argument("--set", action="append", default=[], metavar="LINE",
                   help="a top-level line added to fiberapp's config, e.g. 'cpu_accounting = false' (repeatable)")
    p.add_argument("--keep", metavar="DIR", help="keep the callgrind dumps in DIR (for callgrind_annotate)")
    p.add_argument("--syscalls", action="store_true",
                   help="count system calls instead (native run under strace -c -f; try --requests 20000)")
    p.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve_bare:
        return serve_bare(args.serve_bare)
    from bench import seed_experiment as se

    kinds = args.only.split(",")
    n_work = 92  # work(92) is ~17 us on this machine (the experiment calibrates; counts need a fixed n)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        delayd = se.build_delayd(tmp)
        dproc, dport = se.start_delayd(delayd, 5000, args.load_cpu)
        try:
            for kind in kinds:
                if kind == "page":
                    if args.syscalls:
                        continue
                    results[kind] = count_page(n_work)
                elif args.syscalls:
                    counts = count_server(kind, args, tmp, dport, n_work)
                    total = sum(c for c, _ in counts.values())
                    print(f"{kind:9s} {total:6.2f} system calls/request: " + ", ".join(
                        f"{name} {c:.3f}" + (f" ({e:.3f} failing)" if e else "")
                        for name, (c, e) in sorted(counts.items(), key=lambda kv: -kv[1][0]) if c >= 0.001),
                        flush=True)
                    continue
                else:
                    results[kind] = count_server(kind, args, tmp, dport, n_work)
                print(f"{kind:9s} {results[kind]:10,.0f} instructions/request", flush=True)
        finally:
            se.stop(dproc)
    if "page" in results:
        page = results["page"]
        for kind in ("fiberapp", "bare"):
            if kind in results:
                print(f"{kind:9s} beyond the page: {results[kind] - page:10,.0f} instructions/request")


if __name__ == "__main__":
    main()
