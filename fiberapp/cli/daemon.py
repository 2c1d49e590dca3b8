"""`fiberapp start|stop|status|restart`: the server as a background daemon.

start launches `python -m fiberapp run ...` in a new session with its output in the log file
and waits for the same READY=1 datagram systemd would get (it passes its own NOTIFY_SOCKET),
so `start` returns only once the server is listening — or fails with the log's last lines.
"""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import click
import psutil

from fiberapp.cli.options import load_config, overrides_from, server_options
from fiberapp.daemon import is_alive, read_pid


def _format_uptime(seconds):
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{days}d " if days else "") + f"{hours:02d}:{minutes:02d}:{secs:02d}"


def _tail(path, lines=20):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")
    except OSError:
        return ""


def _start(cfg, config_path, scripts, overrides, timeout):
    pid = read_pid(cfg.pidfile_path)
    if pid is not None:
        click.echo(f"fiberapp is already running (pid {pid})")
        return 0
    os.makedirs(cfg.data_dir, exist_ok=True)
    log_file = os.path.abspath(cfg.log_file or os.path.join(cfg.data_dir, "fiberapp.log"))
    args = [sys.executable, "-m", "fiberapp", "run", "--log-file", log_file]
    if config_path:
        args += ["--config", os.path.abspath(config_path)]
    for name, value in overrides.items():
        if name != "log_file":
            args += [f"--{name.replace('_', '-')}", str(value)]
    args += [os.path.abspath(s) for s in scripts]

    with tempfile.TemporaryDirectory(prefix="fiberapp-start-") as tmp:
        notify_path = os.path.join(tmp, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(notify_path)
        env = dict(os.environ, NOTIFY_SOCKET=notify_path)
        env.pop("WATCHDOG_USEC", None)
        with open(log_file, "ab") as out:
            child = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                     env=env, start_new_session=True, close_fds=True)
        deadline = time.monotonic() + timeout
        sock.settimeout(0.1)
        try:
            while time.monotonic() < deadline:
                try:
                    message = sock.recv(4096).decode(errors="replace")
                except socket.timeout:
                    message = ""
                if "READY=1" in message.split("\n"):
                    click.echo(f"fiberapp started (pid {child.pid}); log: {log_file}")
                    return 0
                if child.poll() is not None:
                    click.echo(f"fiberapp failed to start (exit code {child.returncode}); "
                               f"last lines of {log_file}:\n{_tail(log_file)}", err=True)
                    return 1
        finally:
            sock.close()
    click.echo(f"fiberapp did not report ready within {timeout:.0f}s (pid {child.pid}); "
               f"see {log_file}", err=True)
    return 1


def _stop(cfg, timeout):
    pid = read_pid(cfg.pidfile_path)
    if pid is None:
        click.echo("fiberapp is not running")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_alive(pid):
            click.echo(f"fiberapp stopped (pid {pid})")
            return 0
        time.sleep(0.05)  # polling a foreign process: no event to wait on
    click.echo(f"fiberapp (pid {pid}) did not stop within {timeout:.0f}s", err=True)
    return 1


@click.command()
@click.argument("scripts", nargs=-1, type=click.Path(dir_okay=False))
@server_options
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for readiness.")
def start(scripts, config_path, timeout, **kwargs):
    """Start the server in the background and wait until it is ready."""
    overrides = overrides_from(kwargs)
    cfg = load_config(config_path, overrides, scripts)
    sys.exit(_start(cfg, config_path, scripts, overrides, timeout))


@click.command()
@server_options
@click.option("--timeout", type=float, default=None, help="Seconds to wait (default shutdown_timeout + 5).")
def stop(config_path, timeout, **kwargs):
    """Stop the background server gracefully and wait for it to exit."""
    cfg = load_config(config_path, overrides_from(kwargs))
    sys.exit(_stop(cfg, timeout if timeout is not None else cfg.shutdown_timeout + 5))


@click.command()
@server_options
def status(config_path, **kwargs):
    """Say whether the server is running, with its pid and uptime (exit 3 when stopped)."""
    cfg = load_config(config_path, overrides_from(kwargs))
    pid = read_pid(cfg.pidfile_path)
    if pid is None:
        click.echo("fiberapp is stopped")
        sys.exit(3)
    try:
        uptime = time.time() - psutil.Process(pid).create_time()
    except psutil.Error:
        uptime = 0
    click.echo(f"fiberapp is running (pid {pid}, uptime {_format_uptime(uptime)})")


@click.command()
@click.argument("scripts", nargs=-1, type=click.Path(dir_okay=False))
@server_options
@click.option("--timeout", default=30.0, show_default=True)
def restart(scripts, config_path, timeout, **kwargs):
    """Stop the server (if running) and start it again."""
    overrides = overrides_from(kwargs)
    cfg = load_config(config_path, overrides, scripts)
    code = _stop(cfg, cfg.shutdown_timeout + 5)
    sys.exit(code or _start(cfg, config_path, scripts, overrides, timeout))
