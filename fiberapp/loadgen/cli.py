"""``fiberapp bench taxi``: the click group ``bench`` and its ``taxi`` command.

The main CLI registers ``bench`` (``main.add_command(bench)``) after it has
monkey-patched; this module patches nothing (its sockets, queues and subprocesses are
gevent's own). Standalone: ``python -m fiberapp.loadgen.cli taxi --help``.
"""
import sys

import click
import gevent
import orjson

from fiberapp.loadgen.config import LoadgenError, TaxiConfig
from fiberapp.loadgen.results import format_report
from fiberapp.loadgen.worker import run

_D = TaxiConfig()


@click.group(name="bench")
def bench():
    """Load generators and benchmarks against a running server."""


@bench.command("taxi")
@click.option("--url", default=_D.url, show_default=True, help="Base URL of the taxi API (http only; a path prefix is kept).")
@click.option("--drivers", default=_D.drivers, show_default=True, type=click.IntRange(min=0), help="Simulated drivers (see --per-conn for their connections).")
@click.option("--interval", default=_D.interval, show_default=True, type=click.FloatRange(min=0, min_open=True), help="Seconds between a driver's location pings (+-20 % jitter); also its offer long-poll timeout.")
@click.option("--orders", default=_D.orders, show_default=True, type=click.FloatRange(min=0), help="Orders per second, averaged over the run.")
@click.option("--duration", default=_D.duration, show_default=True, type=click.FloatRange(min=0, min_open=True), help="Seconds of load.")
@click.option("--rush", default=_D.rush, show_default=True, type=click.FloatRange(0, 1, max_open=True), help="Rush-hour swing: the rate goes from (1-rush)x to (1+rush)x the average mid-run.")
@click.option("--ramp", default=0.0, show_default=True, type=click.FloatRange(min=0), help="Seconds over which drivers start and connect; 0 = one interval. Raise it when the server's accept queue overflows (high connect p99).")
@click.option("--accept", default=_D.accept, show_default=True, type=click.FloatRange(0, 1), help="Probability that a driver accepts an offer.")
@click.option("--ride-time", default=_D.ride_time, show_default=True, type=click.FloatRange(min=0, min_open=True), help="Mean seconds from accept to complete.")
@click.option("--patience", default=_D.patience, show_default=True, type=click.FloatRange(min=0, min_open=True), help="Mean seconds a client waits for a driver before cancelling.")
@click.option("--client-poll", default=_D.client_poll, show_default=True, type=click.FloatRange(min=0, min_open=True), help="Seconds between a client's order status checks.")
@click.option("--per-conn", default=0, show_default=True, type=click.IntRange(min=0), help="Drivers per keep-alive connection. 1: one each, offers by long-poll. K > 1: K drivers take turns on one connection and read offers from their location answers. 0: 1 if every connection fits one process's open-files limit (the server's too, on one machine), else 20.")
@click.option("--client-conns", default=_D.client_conns, show_default=True, type=click.IntRange(min=1), help="Keep-alive connections shared by the clients.")
@click.option("--timeout", default=_D.timeout, show_default=True, type=click.FloatRange(min=0, min_open=True), help="Seconds before a request is counted as timed out (added to a long-poll's own wait).")
@click.option("--processes", default=0, show_default=True, type=click.IntRange(min=0), help="Worker processes; 0 = as few as the open-files limit allows.")
@click.option("--seed", default=_D.seed, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout (progress still goes to stderr).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def taxi(as_json, quiet, **options):
    """Drive a taxi-dispatch API with simulated drivers and clients.

    Prints requests/s, p50/p95/p99 per endpoint, dispatch latency (order created ->
    accepted, seen from the generator), orders by final state and errors by kind.
    Exits 1 if no request got an answer.
    """
    cfg = TaxiConfig(**options)
    try:
        cfg.check()
    except LoadgenError as e:
        raise click.UsageError(str(e))
    bar = None
    if not quiet:
        steps = max(1, int(cfg.duration * 10))
        bar = click.progressbar(length=steps, label="taxi", file=sys.stderr, show_eta=True,
                                item_show_func=lambda p: p and f"{p['requests']} req, {p['errors']} errors, {p['orders']} orders")
        bar.__enter__()
        done = [0]

        def on_progress(p):
            step = min(steps, int(p["elapsed"] * 10))
            bar.update(max(0, step - done[0]), current_item=p)
            done[0] = max(done[0], step)
    else:
        on_progress = None
    try:
        results = run(cfg, on_progress=on_progress)
    except LoadgenError as e:
        raise click.ClickException(str(e))
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    report = results.report(config=cfg.to_json())
    if as_json:
        click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(format_report(report))
    if not results.total_requests():
        sys.exit(1)


if __name__ == "__main__":
    gevent.get_hub()  # the generator runs on this thread's hub
    bench()
