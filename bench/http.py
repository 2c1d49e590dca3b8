"""HTTP server throughput and idle-connection memory, side by side in one run.

    .venv/bin/python -m bench.http [--rounds 5] [--duration 5] [--connections 50]
                                   [--idle 10000,19000] [--only fiberapp,bare]

Throughput: each server is pinned to CPU 0 (taskset), wrk to CPU 1, keep-alive,
`wrk -t1 -c50 -d5s`, GET / answering "hello". Servers, interleaved in every round so
background noise hits all of them alike:
  nginx    one worker, `return 200 "hello"` (the ceiling)
  fiberapp HTTPServer + Router (the hello route among a dozen API-like routes)
  bare     a minimal httptools loop on a gevent StreamServer (no routing, no Request
           object, fixed response): what the parser + loop cost on their own
  pywsgi   gevent.pywsgi.WSGIServer with a hello WSGI app (log=None)
Reported: median req/s per server, and median server CPU time (user + system, nginx's
worker included) per request, which is steadier than req/s when other work shares the
machine; ratios fiberapp/nginx, fiberapp/pywsgi in both.

Idle connections: the fiberapp server alone; this process opens N keep-alive
connections, sends one request on each and reads the answer, then holds them idle
while wrk runs against the same server; RSS growth / N is the cost of one idle
connection. Afterwards every idle connection sends one more request and must be answered.

Helper modes (used by the above): `python -m bench.http serve {fiberapp|bare|pywsgi} PORT`.
"""
import argparse
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from bench.common import cpu_pressure, free_port, wait_listening

PY = sys.executable
SERVER_CPU, WRK_CPU = "0", "1"


# -- the servers ----------------------------------------------------------------------

def serve(kind, port):
    from fiberapp.runtime.patch import patch_all

    patch_all()
    import gevent

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if kind == "fiberapp":
        from fiberapp.http import HTTPServer, Router

        r = Router()
        r.add("GET", "/", lambda req: "hello")
        for path in ("/api/v1/tubes", "/api/v1/tubes/{tube}", "/api/v1/tubes/{tube}/tasks",
                     "/api/v1/tubes/{tube}/tasks/{id:int}", "/api/v1/tubes/{tube}/take",
                     "/api/v1/tubes/{tube}/tasks/{id:int}/ack", "/api/v1/tubes/{tube}/tasks/{id:int}/release",
                     "/metrics", "/health", "/api/v1/stats", "/openapi.json"):
            r.add("GET", path, lambda req: "x")
        server = HTTPServer(r, "127.0.0.1", port, max_connections=hard, backlog=4096, idle_timeout=600)
        server.start()
    elif kind == "bare":
        _bare(port)
    elif kind == "pywsgi":
        from gevent.pywsgi import WSGIServer

        def app(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
            return [b"hello"]

        WSGIServer(("127.0.0.1", port), app, log=None, backlog=4096).start()
    else:
        raise SystemExit(f"unknown server {kind}")
    print("ready", flush=True)
    gevent.wait()


def _bare(port):
    """The floor: parse with httptools, answer a constant, nothing else."""
    import httptools
    from gevent.server import StreamServer

    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"

    class Proto:
        __slots__ = ("n",)

        def __init__(self):
            self.n = 0

        def on_message_complete(self):
            self.n += 1

    def handle(sock, addr):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        proto = Proto()
        parser = httptools.HttpRequestParser(proto)
        buf = bytearray(65536)
        view = memoryview(buf)
        while True:
            try:
                n = sock.recv_into(buf)
            except OSError:
                return
            if not n:
                return
            try:
                parser.feed_data(view[:n])
            except httptools.HttpParserError:
                return
            if proto.n:
                sock.sendall(reply * proto.n)
                proto.n = 0

    StreamServer(("127.0.0.1", port), handle, backlog=4096).start()


class Server:
    def __init__(self, kind, port, workdir):
        self.kind, self.port = kind, port
        if kind == "nginx":
            conf = os.path.join(workdir, "nginx.conf")
            with open(conf, "w") as f:
                f.write(NGINX_CONF.format(port=port, dir=workdir))
            cmd = ["taskset", "-c", SERVER_CPU, "nginx", "-c", conf, "-p", workdir]
        else:
            cmd = ["taskset", "-c", SERVER_CPU, PY, "-m", "bench.http", "serve", kind, str(port)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE if kind != "nginx" else subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        if kind != "nginx":
            assert self.proc.stdout.readline().strip() == b"ready", f"{kind} did not start"
        wait_listening(port)

    def rss(self):
        import psutil

        return psutil.Process(self.proc.pid).memory_info().rss

    def cpu(self):
        """User + system CPU seconds of the server process and its children (nginx's worker)."""
        import psutil

        proc = psutil.Process(self.proc.pid)
        total = 0.0
        for p in [proc] + proc.children(recursive=True):
            t = p.cpu_times()
            total += t.user + t.system
        return total

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 20000; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port};
        location / {{ default_type text/plain; return 200 "hello"; }}
    }}
}}
"""


def wrk(port, duration, connections):
    cmd = ["taskset", "-c", WRK_CPU, "wrk", "-t1", f"-c{connections}", f"-d{duration}s", f"http://127.0.0.1:{port}/"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"wrk saw {non2xx.group(1)} error responses:\n{out}")
    return rps, total, (errors.group(1) if errors else "")


# -- the runs -----------------------------------------------------------------------------

def throughput(kinds, rounds, duration, connections):
    results = {k: [] for k in kinds}
    cpu_us = {k: [] for k in kinds}
    workdir = tempfile.mkdtemp(prefix="bench-http-")
    try:
        for rnd in range(rounds):
            for kind in kinds:
                server = Server(kind, free_port(), workdir)
                try:
                    wrk(server.port, 1, connections)  # warm-up
                    cpu0 = server.cpu()
                    rps, total, errs = wrk(server.port, duration, connections)
                    per = (server.cpu() - cpu0) / total * 1e6
                finally:
                    server.stop()
                results[kind].append(rps)
                cpu_us[kind].append(per)
                print(f"round {rnd + 1} {kind:9s} {rps:10.0f} req/s {per:7.1f} us CPU/req {errs} "
                      f"(cpu pressure {cpu_pressure():.2f}%)", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in results.items()}
    cpu = {k: statistics.median(v) for k, v in cpu_us.items()}
    print("\nmedians (server on CPU %s, wrk -t1 -c%d -d%ds on CPU %s, %d rounds):"
          % (SERVER_CPU, connections, duration, WRK_CPU, rounds))
    for k in kinds:
        print(f"  {k:9s} {med[k]:10.0f} req/s  {cpu[k]:7.1f} us CPU/req   "
              f"(runs: {', '.join('%.0f' % x for x in results[k])})")
    if "fiberapp" in med:
        for peer in ("nginx", "bare", "pywsgi"):
            if peer in med:
                print(f"  fiberapp / {peer:7s}: req/s ratio {med['fiberapp'] / med[peer]:.2f}, "
                      f"CPU-per-request ratio {cpu[peer] / cpu['fiberapp']:.2f} (peer CPU / fiberapp CPU)")
    return med


def idle_memory(counts, duration, connections):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    workdir = tempfile.mkdtemp(prefix="bench-http-")
    try:
        for count in counts:
            server = Server("fiberapp", free_port(), workdir)
            try:
                wrk(server.port, 1, connections)  # warm up, so allocator pools exist before the baseline
                time.sleep(0.5)
                base = server.rss()
                socks = []
                request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
                for i in range(count):
                    s = socket.create_connection(("127.0.0.1", server.port))
                    s.sendall(request)
                    socks.append(s)
                for s in socks:
                    assert s.recv(4096).startswith(b"HTTP/1.1 200"), "idle connection setup failed"
                time.sleep(0.5)
                held = server.rss()
                rps, _, errs = wrk(server.port, duration, connections)
                for s in socks:
                    s.sendall(request)
                answered = sum(1 for s in socks if s.recv(4096).startswith(b"HTTP/1.1 200"))
                after = server.rss()
                for s in socks:
                    s.close()
                per = (held - base) / count / 1024
                print(f"idle {count:6d}: RSS {base / 2**20:.1f} -> {held / 2**20:.1f} MiB held "
                      f"({per:.2f} KiB per idle connection), {after / 2**20:.1f} MiB after wrk; "
                      f"wrk meanwhile {rps:.0f} req/s {errs}; answered afterwards {answered}/{count}", flush=True)
            finally:
                server.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        return serve(sys.argv[2], int(sys.argv[3]))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--only", default="nginx,fiberapp,bare,pywsgi")
    ap.add_argument("--idle", default="10000,19000", help="idle-connection counts ('' to skip)")
    args = ap.parse_args()
    for tool in ("wrk", "taskset") + (("nginx",) if "nginx" in args.only else ()):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (apt-get install wrk nginx)")
    print(f"load before: {os.getloadavg()}, cpu pressure {cpu_pressure():.2f}%", flush=True)
    if args.rounds:
        throughput(args.only.split(","), args.rounds, args.duration, args.connections)
    if args.idle:
        idle_memory([int(x) for x in args.idle.split(",")], args.duration, args.connections)
    print(f"load after: {os.getloadavg()}, cpu pressure {cpu_pressure():.2f}%", flush=True)


if __name__ == "__main__":
    main()
