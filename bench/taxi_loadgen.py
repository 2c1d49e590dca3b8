"""How cheap is the taxi load generator itself? Side by side with wrk, against nginx.

    .venv/bin/python -m bench.taxi_loadgen [--runs 3] [--quick]

nginx (started here, 2 workers, on a free port) plays the taxi API with canned answers:
every endpoint answers at once (the offer poll with 204, so drivers wait out their
interval on their own side). The server is therefore never the bottleneck and what is
measured is the generator: requests/s achieved against the rate it aimed for, and CPU
seconds per request (user + system, from wait4 on the generator's process tree).
The peer is wrk (C, one thread, 200 connections, GET on the same server) measured the
same way: its CPU per request is the floor a load tool can reach. The ratio says how
many times more CPU per request the Python generator spends, simulation included.
Medians of --runs runs. Needs nginx and wrk (apt-get install nginx wrk).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from bench.common import free_port, wait_listening

NGINX_CONF = """
worker_processes 2;
worker_rlimit_nofile 20000;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log crit;
daemon off;
events {{ worker_connections 19000; }}
http {{
    access_log off;
    client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};
    uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    default_type application/json;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location ~ ^/taxi/drivers/[^/]+/location$ {{ return 200 '{{"ok":true}}'; }}
        location ~ ^/taxi/drivers/[^/]+/offer$ {{ return 204; }}
        location ~ ^/taxi/drivers/[^/]+/offer/(accept|decline)$ {{ return 200 '{{"ok":true}}'; }}
        location = /taxi/orders {{ return 201 '{{"order":{{"id":1,"state":"created"}}}}'; }}
        location ~ ^/taxi/orders/[0-9]+$ {{ return 200 '{{"order":{{"id":1,"state":"created","driver":null}}}}'; }}
        location ~ ^/taxi/orders/[0-9]+/cancel$ {{ return 200 '{{"order":{{"id":1,"state":"cancelled"}}}}'; }}
        location = /taxi/stats {{ return 200 '{{"orders":{{}},"drivers":{{"online":0,"free":0}},"dispatch_latency":{{}}}}'; }}
    }}
}}
"""


def run_measured(cmd):
    """Run cmd; returns (stdout, wall seconds, CPU seconds of it and its children)."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    if p.returncode:
        raise RuntimeError(f"{cmd[:4]} exited {p.returncode}")
    return out, wall, ru.ru_utime + ru.ru_stime


def loadgen(url, drivers, interval, orders, duration, ramp=0.0, per_conn=0):
    cmd = [sys.executable, "-m", "fiberapp.loadgen.cli", "taxi", "--url", url, "--drivers", str(drivers),
           "--interval", str(interval), "--orders", str(orders), "--duration", str(duration), "--ramp", str(ramp),
           "--per-conn", str(per_conn), "--client-poll", "2", "--patience", "20", "--json", "--quiet"]
    out, wall, cpu = run_measured(cmd)
    rep = json.loads(out)
    n = rep["requests"]
    # A free driver with its own connection sends 2 requests per interval (ping + poll,
    # answered at once); drivers sharing connections send the ping only.
    target = drivers * (2 if "offer_poll" in rep["endpoints"] else 1) / interval
    return {"rps": rep["rps"], "target": target, "requests": n, "cpu": cpu, "cpu_us_per_req": cpu / n * 1e6,
            "cpu_share": cpu / wall, "errors": sum(rep["errors"].values()), "notes": rep["notes"],
            "p50_location_ms": (rep["endpoints"].get("location", {}).get("p50") or 0) * 1000,
            "p99_location_ms": (rep["endpoints"].get("location", {}).get("p99") or 0) * 1000,
            "p99_connect_ms": (rep["connects"]["p99"] or 0) * 1000}


def wrk(url, duration):
    out, wall, cpu = run_measured(["wrk", "-t1", "-c200", f"-d{duration}s", url + "/taxi/orders/1"])
    text = out.decode()
    total = int(text.split(" requests in ")[0].split()[-1])
    rps = float(text.split("Requests/sec:")[1].split()[0])
    return {"rps": rps, "requests": total, "cpu": cpu, "cpu_us_per_req": cpu / total * 1e6}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="short runs (smoke)")
    ap.add_argument("--only", choices=("small", "large", "ramp"), help="run one scenario (and wrk)")
    args = ap.parse_args()
    for tool in ("nginx", "wrk"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed (apt-get install {tool})")
    short = args.quick
    scenarios = [
        ("2,000 drivers, ping every 1 s", 2000, 1.0, 50, 5 if short else 15, 0.0, 0),
        ("20,000 drivers, ping every 5 s (20 per pipelined connection)", 20000, 5.0, 100, 10 if short else 30, 0.0, 0),
        ("20,000 drivers, ping every 5 s, a connection each, --ramp 20", 20000, 5.0, 100, 20 if short else 40, 20.0, 1),
    ]
    if args.only:
        scenarios = [scenarios[("small", "large", "ramp").index(args.only)]]
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(tmp=tmp, port=port))
        nginx = subprocess.Popen(["nginx", "-c", conf, "-p", tmp])
        try:
            wait_listening(port, what="nginx")
            url = f"http://127.0.0.1:{port}"
            print(f"nginx on {url}; {args.runs} runs each; medians")
            peer = [wrk(url, 5 if short else 10) for _ in range(args.runs)]
            wrk_us = statistics.median(r["cpu_us_per_req"] for r in peer)
            print(f"wrk -t1 -c200: {statistics.median(r['rps'] for r in peer):,.0f} req/s, "
                  f"{wrk_us:.1f} us CPU/request")
            for name, drivers, interval, orders, duration, ramp, per_conn in scenarios:
                runs = [loadgen(url, drivers, interval, orders, duration, ramp, per_conn) for _ in range(args.runs)]
                med = lambda k: statistics.median(r[k] for r in runs)  # noqa: E731
                print(f"loadgen {name} ({orders} orders/s, {duration} s): "
                      f"{med('rps'):,.0f} req/s of {runs[0]['target']:,.0f} aimed, "
                      f"{med('cpu_us_per_req'):.1f} us CPU/request = {med('cpu_us_per_req') / wrk_us:.1f}x wrk, "
                      f"CPU {med('cpu_share') * 100:.0f} % of one core, location p50/p99 {med('p50_location_ms'):.1f}/{med('p99_location_ms'):.1f} ms, "
                      f"connect p99 {med('p99_connect_ms'):.0f} ms, "
                      f"errors {med('errors'):.0f}; {runs[0]['notes'][-1]}")
        finally:
            nginx.terminate()
            nginx.wait(timeout=10)


if __name__ == "__main__":
    main()
