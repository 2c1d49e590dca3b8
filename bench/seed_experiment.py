"""The seed's experiment: process-per-request (gunicorn sync workers) vs one fiberapp process.

    .venv/bin/python -m bench.seed_experiment            # full: 3 runs of 5 s per cell
    .venv/bin/python -m bench.seed_experiment --quick    # 1 run of 2 s, fewer cells

The talk measured a page whose handler ran ~17 us of code and waited ~156 us on the
network and the database; rewriting the process-per-request server around an event loop
gave >= 10x throughput on the same CPU. Here the same page is served, side by side in one
run, by

- gunicorn sync workers (8, 20, 30 processes): every wait blocks its process;
- one fiberapp process (the handler as a fiber script route): every wait yields.

The handler runs ``work()`` (calibrated to ~17 us of Python on this machine) and then
waits on real I/O, one of:

- ``net``: a request/answer on a TCP connection to a delay server that answers at once
  (loopback round trip plus the delay server's turn: measured and printed);
- ``slow``: the same, the delay server answering after 5 ms (a slow query);
- ``pg``: a real PostgreSQL query (a primary-key lookup in pg_class).

The delay server is C (compiled here from the source below with cc, an epoll loop with a
timerfd; a gevent timer would round sub-millisecond waits up to ~1.1 ms). Servers are
pinned to CPU 0, wrk and the delay server to CPU 1 (taskset); PostgreSQL is not pinned.
A cell runs max(--duration, connections / 100) seconds after a 1-s warm-up (a sync pool
answers the first of 1,000 fresh connections only after seconds: a short window measures
the ramp). Each cell gives req/s (median of runs), wrk's p50/p99, non-2xx + socket errors, the
server's CPU time per request (user + system of the whole process tree, psutil: steadier
than req/s on a shared machine) and its memory (RSS summed over the tree; USS too, since
forked workers share pages). Ratios are fiberapp over the best gunicorn cell of the same
wait and connection count.

gunicorn is a benchmark-only tool: it is installed on first use in its own venv
(--gunicorn-venv, default /tmp/seedx/venv) with psycopg, never in setup.cfg.
wrk comes from apt-get. This file is also the fiber script fiberapp runs (``init``) and
the WSGI app gunicorn runs (``make_wsgi()``); neither imports fiberapp at module level.
"""
import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time

PG_QUERY = "SELECT relname FROM pg_class WHERE oid = %s"
PG_OID = 1259  # pg_class itself
BODY_KEYS = ("user", "items", "total")
DEFAULT_DSN = os.environ.get("FIBERAPP_TEST_PG_DSN") or "postgresql://postgres@127.0.0.1:5432/test"


# -- the page (shared by both servers) --------------------------------------------------------

def work(n):
    """A stand-in for the handler's own code: n rounds of small-object Python."""
    items = []
    total = 0
    for i in range(n):
        item = {"id": i, "price": i * 3 % 17}
        total += item["price"]
        items.append(item)
    return {"user": "u1", "items": len(items), "total": total}


def page_body(result):
    return json.dumps(result, separators=(",", ":")).encode()


# -- gunicorn's side: a WSGI app with blocking waits ------------------------------------------

def make_wsgi():
    """gunicorn 'bench.seed_experiment:make_wsgi()'. Per worker process: one blocking
    connection to the delay server or PostgreSQL, opened on first use."""
    n = int(os.environ["SEED_WORK_N"])
    mode = os.environ["SEED_WAIT"]
    state = {}
    if mode == "pg":
        import psycopg  # noqa: F401  (imported once in the master with --preload, not per worker)

    def wait():
        if mode == "pg":
            conn = state.get("pg")
            if conn is None:
                import psycopg

                conn = state["pg"] = psycopg.connect(os.environ["SEED_DSN"], autocommit=True)
            conn.execute(PG_QUERY, (PG_OID,)).fetchone()
            return
        sock = state.get("sock")
        if sock is None:
            sock = state["sock"] = socket.create_connection(("127.0.0.1", int(os.environ["SEED_DELAY_PORT"])))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            state["file"] = sock.makefile("rb")
        sock.sendall(b"w\n")
        if state["file"].readline() != b"ok\n":
            raise RuntimeError("delay server hung up")

    def app(environ, start_response):
        result = work(n)
        wait()
        body = page_body(result)
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    return app


# -- fiberapp's side: the same page as a fiber script -----------------------------------------

def init(app):
    """fiberapp run bench/seed_experiment.py: GET /seed. Waits yield: delay-server
    connections come from a LIFO pool (one per concurrent request at most), queries go
    through app.pg."""
    from fiberapp import net
    from fiberapp.http.response import Response

    n = int(os.environ["SEED_WORK_N"])
    mode = os.environ["SEED_WAIT"]
    port = int(os.environ.get("SEED_DELAY_PORT", "0"))
    idle = []  # the pool: a plain list (fibers never preempt each other between pop and append)
    pg = app.pg

    def wait_delay():
        stream = idle.pop() if idle else net.connect("127.0.0.1", port, connect_timeout=5, read_timeout=30)
        stream.write(b"w\n")
        if stream.read_line() != b"ok":
            stream.close()
            raise RuntimeError("delay server hung up")
        idle.append(stream)

    def wait_pg():
        pg.fetch_val(PG_QUERY, (PG_OID,))

    wait = wait_pg if mode == "pg" else wait_delay

    @app.route("GET", "/seed")
    def seed(request):
        result = work(n)
        wait()
        return Response(page_body(result), content_type="application/json")


# -- the driver -------------------------------------------------------------------------------

DELAYD_C = r"""
#define _GNU_SOURCE
/* delayd PORT DELAY_US: answer each "\n"-terminated request with "ok\n" after DELAY_US.
   epoll + one timerfd; every delay is equal, so pending replies form a FIFO. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>
#define MAXFD 65536
#define RING (1 << 20)
typedef struct { int64_t at; int fd; uint32_t gen; } item;
static item ring[RING];
static size_t head, tail;
static uint32_t gen[MAXFD];
static int64_t now_ns(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1000000000LL + t.tv_nsec; }
static void reply(int fd) { ssize_t r = write(fd, "ok\n", 3); (void)r; }
int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 0; int64_t delay = (argc > 2 ? atoll(argv[2]) : 0) * 1000;
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(0x7f000001)};
    if (bind(ls, (void *)&a, sizeof a) || listen(ls, 4096)) { perror("bind/listen"); return 1; }
    socklen_t al = sizeof a; getsockname(ls, (void *)&a, &al); printf("%d\n", ntohs(a.sin_port)); fflush(stdout);
    int ep = epoll_create1(0), tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls}; epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    ev.data.fd = tfd; epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev);
    struct epoll_event evs[512]; char buf[4096]; int64_t armed = 0;
    for (;;) {
        int n = epoll_wait(ep, evs, 512, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == ls) {
                int c; while ((c = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    if (c >= MAXFD) { close(c); continue; }
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct epoll_event ce = {.events = EPOLLIN, .data.fd = c}; epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce);
                }
            } else if (fd == tfd) { uint64_t x; ssize_t r = read(tfd, &x, 8); (void)r; armed = 0; }
            else {
                ssize_t r = read(fd, buf, sizeof buf);
                if (r <= 0) { if (r < 0 && errno == EAGAIN) continue; gen[fd]++; close(fd); continue; }
                for (ssize_t k = 0; k < r; k++) if (buf[k] == '\n') {
                    if (!delay) reply(fd);
                    else if (tail - head < RING) { item *it = &ring[tail++ % RING]; it->at = now_ns() + delay; it->fd = fd; it->gen = gen[fd]; }
                }
            }
        }
        int64_t t = now_ns();
        while (head < tail && ring[head % RING].at <= t) { item *it = &ring[head++ % RING]; if (gen[it->fd] == it->gen) reply(it->fd); }
        if (head < tail && armed != ring[head % RING].at) {
            armed = ring[head % RING].at;
            struct itimerspec s = {.it_value = {.tv_sec = armed / 1000000000LL, .tv_nsec = armed % 1000000000LL}};
            timerfd_settime(tfd, TFD_TIMER_ABSTIME, &s, NULL);
        }
    }
}
"""

WAITS = {"net": 0, "slow": 5000, "pg": None}  # delay server's delay in us (None: PostgreSQL)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def work_cost(n, reps=2000):
    """Microseconds work(n) takes here (median of 5 timings)."""
    samples = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(reps):
            work(n)
        samples.append((time.perf_counter() - t0) / reps * 1e6)
    return statistics.median(samples)


def calibrate(target_us=17.0):
    """The n for which work(n) takes ~target_us here, and that cost."""
    n = 10
    for _ in range(3):  # the cost is not quite linear in n (a fixed part): converge
        n = max(1, round(n * target_us / work_cost(n)))
    return n, work_cost(n)


def build_delayd(tmp):
    src = os.path.join(tmp, "delayd.c")
    exe = os.path.join(tmp, "delayd")
    with open(src, "w") as f:
        f.write(DELAYD_C)
    subprocess.run(["cc", "-O2", "-o", exe, src], check=True)
    return exe


def start_delayd(exe, delay_us, cpu):
    proc = subprocess.Popen(["taskset", "-c", str(cpu), exe, "0", str(delay_us)], stdout=subprocess.PIPE)
    port = int(proc.stdout.readline())
    return proc, port


def delay_rtt(port, n=2000):
    """Median round trip through the delay server alone, in us."""
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = s.makefile("rb")
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        s.sendall(b"w\n")
        f.readline()
        samples.append((time.perf_counter() - t0) * 1e6)
    s.close()
    return statistics.median(samples)


def ensure_gunicorn(venv):
    exe = os.path.join(venv, "bin", "gunicorn")
    if not os.path.exists(exe):
        log(f"installing gunicorn and psycopg into {venv} (benchmark-only venv)")
        subprocess.run(["python3", "-m", "venv", venv], check=True)
        subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", "gunicorn", "psycopg[binary]"], check=True)
    return exe


def wait_http(port, path, timeout=90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not answer {path}")


def tree(pid):
    import psutil

    root = psutil.Process(pid)
    return [root] + root.children(recursive=True)


def cpu_seconds(pid):
    total = 0.0
    for p in tree(pid):
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except Exception:  # a worker that just exited
            pass
    return total


def memory(pid):
    rss = uss = 0
    for p in tree(pid):
        try:
            info = p.memory_full_info()
            rss += info.rss
            uss += info.uss
        except Exception:
            pass
    return rss / 2**20, uss / 2**20


_LAT = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)


def parse_wrk(out):
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m is None:
        raise RuntimeError(f"wrk failed:\n{out}")
    rps = float(m.group(1))
    lat = {}
    for pct, value, unit in _LAT.findall(out):
        lat[pct] = float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
    m = re.search(r"(\d+) requests in", out)
    requests = int(m.group(1)) if m else 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)
    return {"rps": rps, "p50_ms": lat.get("50"), "p99_ms": lat.get("99"), "requests": requests, "errors": errors}


def run_wrk(port, path, conns, duration, cpu, server_pid):
    cmd = ["taskset", "-c", str(cpu), "wrk", "-t1", f"-c{conns}", f"-d{max(1, round(duration))}s", "--timeout", "10s",
           "--latency", f"http://127.0.0.1:{port}{path}"]
    cpu0 = cpu_seconds(server_pid)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(duration * 0.6)
    mem = memory(server_pid)
    out, _ = proc.communicate(timeout=duration + 60)
    cpu1 = cpu_seconds(server_pid)
    result = parse_wrk(out)
    result["rss_mb"], result["uss_mb"] = round(mem[0], 1), round(mem[1], 1)
    result["cpu_us_per_req"] = round((cpu1 - cpu0) / max(1, result["requests"]) * 1e6, 1)
    return result


class Servers:
    def __init__(self, args, tmp, n_work):
        self.args, self.tmp, self.n_work = args, tmp, n_work

    def env(self, mode, delay_port):
        return dict(os.environ, SEED_WORK_N=str(self.n_work), SEED_WAIT="pg" if mode == "pg" else "delay",
                    SEED_DELAY_PORT=str(delay_port or 0), SEED_DSN=self.args.dsn)

    def gunicorn(self, workers, mode, delay_port):
        port = _free_port()
        cmd = ["taskset", "-c", str(self.args.server_cpu), self.args.gunicorn, "-w", str(workers), "-k", "sync",
               "-b", f"127.0.0.1:{port}", "--backlog", "4096", "--chdir", self.args.root,
               "--preload", "--log-level", "warning", "bench.seed_experiment:make_wsgi()"]
        proc = subprocess.Popen(cmd, env=self.env(mode, delay_port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(port, "/")
        # Every worker must be up before CPU is counted: booting is not serving.
        deadline = time.monotonic() + 60
        while len(tree(proc.pid)) < 1 + workers and time.monotonic() < deadline:  # master + workers
            time.sleep(0.1)
        return proc, port, "/"

    def fiberapp(self, mode, delay_port):
        port = _free_port()
        cfg = os.path.join(self.tmp, "fiberapp.toml")
        with open(cfg, "w") as f:
            # wal_mode "write", not "none": App.start() fails with "none" at the moment
            # (it calls persistence.start() on the None that open_store returns then).
            f.write("wal_mode = \"write\"\nlog_level = \"WARNING\"\nwatchdog_limit = 1.0\n\n[http]\nmax_connections = 25000\n")
            if mode == "pg":
                f.write(f"\n[pg]\ndsn = {json.dumps(self.args.dsn)}\nmin_size = 30\nmax_size = 30\nmax_wait = 10.0\n")
        data = tempfile.mkdtemp(dir=self.tmp)
        exe = os.path.join(os.path.dirname(sys.executable), "fiberapp")
        cmd = ["taskset", "-c", str(self.args.server_cpu), exe, "run", os.path.abspath(__file__),
               "--config", cfg, "--listen", f"127.0.0.1:{port}", "--data-dir", data]
        proc = subprocess.Popen(cmd, env=self.env(mode, delay_port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(port, "/seed")
        return proc, port, "/seed"


def _free_port():
    # Imported here, not at module level: fiberapp loads this file as a fiber script,
    # where the bench package is not importable.
    from bench.common import free_port

    return free_port()


def stop(proc):
    from bench.common import stop_process

    stop_process(proc, 15)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1 run of 2 s; 8 and 30 workers; 100 and 1000 connections")
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--workers", default="8,20,30")
    p.add_argument("--conns", default="100,1000")
    p.add_argument("--waits", default="net,slow,pg")
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--load-cpu", type=int, default=1)
    p.add_argument("--dsn", default=DEFAULT_DSN)
    p.add_argument("--gunicorn-venv", default="/tmp/seedx/venv", help="created with gunicorn and psycopg on first use")
    p.add_argument("--json", help="also write every cell here")
    p.add_argument("--work-n", type=int, help="work(n) with this n instead of calibrating ~17 us (calibration "
                   "is by wall clock: on a loaded machine it picks a smaller n, a lighter page)")
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.runs, args.workers = 2.0, 1, "8,30"
    args.root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    args.gunicorn = ensure_gunicorn(args.gunicorn_venv)
    workers = [int(w) for w in args.workers.split(",")]
    conns = [int(c) for c in args.conns.split(",")]
    waits = args.waits.split(",")

    if args.work_n:
        n_work, work_us = args.work_n, work_cost(args.work_n)  # timed, not chosen
    else:
        n_work, work_us = calibrate()
    log(f"work({n_work}) = {work_us:.1f} us of Python here")
    header = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
              "loadavg": os.getloadavg(), "work_n": n_work, "work_us": round(work_us, 1),
              "duration": args.duration, "runs": args.runs}
    cells = []
    with tempfile.TemporaryDirectory() as tmp:
        delayd = build_delayd(tmp)
        servers = Servers(args, tmp, n_work)
        for mode in waits:
            dproc, dport = (None, None)
            if WAITS[mode] is not None:
                dproc, dport = start_delayd(delayd, WAITS[mode], args.load_cpu)
                header[f"rtt_{mode}_us"] = round(delay_rtt(dport, 500 if WAITS[mode] else 3000), 1)
                log(f"{mode}: delay server alone answers in {header[f'rtt_{mode}_us']} us (median)")
            try:
                configs = [("gunicorn", w) for w in workers] + [("fiberapp", 1)]
                for kind, w in configs:
                    for c in conns:
                        runs = []
                        for _ in range(args.runs):
                            proc, port, path = (servers.gunicorn(w, mode, dport) if kind == "gunicorn"
                                                else servers.fiberapp(mode, dport))
                            try:
                                run_wrk(port, path, c, 1, args.load_cpu, proc.pid)  # warm-up
                                # Little's law: a pool of a few hundred req/s answers the first
                                # of 1,000 fresh connections only after ~conns/rate seconds, so a
                                # short window would measure the ramp: wide cells run longer.
                                seconds = max(args.duration, c / 100)
                                runs.append(run_wrk(port, path, c, seconds, args.load_cpu, proc.pid))
                            finally:
                                stop(proc)
                        best = sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]
                        cell = {"wait": mode, "server": kind, "workers": w, "conns": c,
                                "rps": round(statistics.median(r["rps"] for r in runs)),
                                "rps_runs": [round(r["rps"]) for r in runs],
                                "p50_ms": best["p50_ms"], "p99_ms": best["p99_ms"],
                                "errors": sum(r["errors"] for r in runs),
                                "cpu_us_per_req": statistics.median(r["cpu_us_per_req"] for r in runs),
                                "rss_mb": best["rss_mb"], "uss_mb": best["uss_mb"]}
                        cells.append(cell)
                        log(json.dumps(cell))
            finally:
                if dproc is not None:
                    stop(dproc)
    print(report(header, cells))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"header": header, "cells": cells}, f, indent=1)


def report(header, cells):
    lines = [f"seed experiment, {header['started']}, loadavg at start {header['loadavg'][0]:.1f}; "
             f"work() {header['work_us']} us; {header['runs']} run(s) of {header['duration']:g} s per cell"]
    for key in ("rtt_net_us", "rtt_slow_us"):
        if key in header:
            lines.append(f"delay server alone ({key[4:-3]}): {header[key]} us round trip")
    lines.append("")
    lines.append("| wait | server | conns | req/s (runs) | p50 ms | p99 ms | errors | CPU us/req | RSS MB (USS) | fiberapp / best gunicorn |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for cell in cells:
        peers = [c for c in cells if c["wait"] == cell["wait"] and c["conns"] == cell["conns"] and c["server"] == "gunicorn"]
        ratio = ""
        if cell["server"] == "fiberapp" and peers:
            best = max(peers, key=lambda c: c["rps"])
            ratio = f"**{cell['rps'] / max(1, best['rps']):.1f}x** (vs {best['workers']} workers)"
        name = "fiberapp (1 process)" if cell["server"] == "fiberapp" else f"gunicorn sync x{cell['workers']}"
        lines.append(f"| {cell['wait']} | {name} | {cell['conns']} | {cell['rps']} ({', '.join(map(str, cell['rps_runs']))}) "
                     f"| {fmt(cell['p50_ms'])} | {fmt(cell['p99_ms'])} | {cell['errors']} | {cell['cpu_us_per_req']} "
                     f"| {cell['rss_mb']} ({cell['uss_mb']}) | {ratio} |")
    return "\n".join(lines)


def fmt(v):
    return "-" if v is None else f"{v:.2f}"


if __name__ == "__main__":
    main()
