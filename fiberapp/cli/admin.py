"""Commands that talk to a running server through its admin console socket, plus check-config."""
import os
import shutil
import signal
import sys
import time

import click
import orjson

from fiberapp import config as config_mod
from fiberapp import console as console_mod
from fiberapp.cli.options import admin_target
from fiberapp.daemon import read_pid


def _connect_error(cfg, exc):
    click.echo(f"fiberapp: cannot reach the server's console at {cfg.console_path}: "
               f"{getattr(exc, 'strerror', None) or exc} (is it running?)", err=True)
    sys.exit(1)


def _eval_json(cfg, expression):
    """Evaluate expression in the server and decode the JSON line it prints."""
    try:
        out = console_mod.evaluate(cfg.console_path, f"as_json({expression})")
    except OSError as exc:
        _connect_error(cfg, exc)
    line = out.strip().splitlines()[-1] if out.strip() else ""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        click.echo(f"fiberapp: the server answered:\n{out}", err=True)
        sys.exit(1)


@click.command()
@admin_target
@click.option("-e", "--eval", "expression", help="Run one expression or statement, print its output, exit.")
def console(cfg, expression):
    """An interactive Python console inside the running server (`app` is the application)."""
    if expression is not None:
        try:
            out = console_mod.evaluate(cfg.console_path, expression)
        except OSError as exc:
            _connect_error(cfg, exc)
        click.echo(out, nl=not out.endswith("\n"))
        return
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(cfg.console_path)
    except OSError as exc:
        _connect_error(cfg, exc)
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:  # pragma: no cover
        pass
    with sock:
        out, prompt = console_mod.read_until_prompt(sock)
        while prompt is not None:
            click.echo(out, nl=False)
            try:
                line = input(prompt)
            except EOFError:
                click.echo()
                return
            except KeyboardInterrupt:
                click.echo()
                line = ""
            sock.sendall(line.encode() + b"\n")
            out, prompt = console_mod.read_until_prompt(sock)
        click.echo(out, nl=False)


@click.command()
@admin_target
def reload(cfg):
    """Re-read the config, reopen log files and reload fiber scripts in the running server."""
    try:
        result = _eval_json(cfg, "app.reload()")
    except SystemExit:
        pid = read_pid(cfg.pidfile_path)
        if pid is None:
            raise
        os.kill(pid, signal.SIGHUP)
        click.echo(f"console unreachable; sent SIGHUP to pid {pid}")
        return
    click.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    if result.get("errors"):
        sys.exit(1)


@click.command()
@admin_target
def snapshot(cfg):
    """Ask the running server for a snapshot now; prints {"lsn": ..., "file": ...}."""
    click.echo(orjson.dumps(_eval_json(cfg, "app.snapshot()")).decode())


def render_top(rows, width):
    """The table `fiberapp top` prints: share of the loop in the last window (NOW) and its
    moving average (AVG), CPU seconds since start, context switches."""
    header = f"{'ID':>6} {'NAME':<32} {'STATUS':<10} {'NOW %':>7} {'AVG %':>7} {'CPU s':>10} {'SWITCHES':>10}"
    lines = [header]
    for row in rows:
        fid = row.get("id")
        lines.append(f"{'-' if fid is None else fid:>6} {str(row.get('name', ''))[:32]:<32} "
                     f"{row.get('status', ''):<10} {row.get('instant', 0.0):>7.1f} "
                     f"{row.get('average', 0.0):>7.1f} {row.get('cpu_time', 0.0):>10.3f} "
                     f"{row.get('switches', 0):>10}")
    return "\n".join(line[:width] for line in lines)


@click.command()
@admin_target
@click.option("--once", is_flag=True, help="Print one table and exit.")
@click.option("--interval", default=1.0, show_default=True, help="Seconds between refreshes.")
@click.option("--limit", "-n", default=0, help="Show at most N fibers (default: what fits).")
def top(cfg, once, interval, limit):
    """Fibers sorted by CPU time, refreshing like top."""
    while True:
        rows = _eval_json(cfg, "app.runtime.top()")
        size = shutil.get_terminal_size((120, 40))
        shown = rows[: limit or (len(rows) if once else max(1, size.lines - 2))]
        table = render_top(shown, size.columns)
        if once:
            click.echo(table)
            return
        click.echo("\x1b[H\x1b[2J" + time.strftime("fiberapp top - %H:%M:%S") + "\n" + table)
        try:
            time.sleep(interval)  # a CLI refresh interval, not a test
        except KeyboardInterrupt:
            return


@click.command("check-config")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--show", is_flag=True, help="Print the effective configuration as JSON.")
def check_config(file, show):
    """Validate a config FILE (plus FIBERAPP_* environment variables); report every error."""
    try:
        cfg = config_mod.load(file)
    except config_mod.ConfigError as exc:
        click.echo(f"{file}: {exc}", err=True)
        sys.exit(1)
    if show:
        click.echo(orjson.dumps(cfg.as_dict(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())
    click.echo(f"{file}: ok")
