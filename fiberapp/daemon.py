"""The server process's lifecycle: pidfile, signals, systemd notifications, graceful stop.

setup -> start -> (reload)* -> stop (graceful, bounded by shutdown_timeout) -> exit.
SIGTERM and SIGINT start a graceful stop; a second one exits at once. SIGHUP reloads.
Handlers go through gevent.signal_handler so they run in a fiber, never inside the hub.
"""
import errno
import logging
import os
import signal

import gevent
import gevent.event

from fiberapp.runtime.errors import FiberappError
from fiberapp.sdnotify import Notifier

log = logging.getLogger("fiberapp")


class AlreadyRunning(FiberappError):
    pass


def read_pid(path):
    """The pid in the pidfile if that process is alive, else None."""
    try:
        with open(path) as f:
            pid = int(f.read().strip() or 0)
    except (FileNotFoundError, ValueError):
        return None
    return pid if pid > 0 and is_alive(pid) else None


def is_alive(pid):
    """True while the process exists and is not a zombie (a daemon whose parent has gone
    may linger as a zombie until something reaps it: it has exited all the same)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def write_pidfile(path):
    pid = read_pid(path)
    if pid is not None and pid != os.getpid():
        raise AlreadyRunning(f"a server is already running with pid {pid} (pidfile {path})")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(tmp, path)


def remove_pidfile(path):
    try:
        if read_pid(path) == os.getpid():
            os.unlink(path)
    except OSError as exc:  # pragma: no cover
        if exc.errno != errno.ENOENT:
            log.warning("could not remove pidfile %s: %s", path, exc)


def serve(cfg, *, config_path=None, cli_overrides=None, cli_scripts=()):
    """Run the server until a stop signal; return the process exit code."""
    from fiberapp.app import App
    from fiberapp.runtime import patch

    problems = patch.verify()
    if problems:  # every query or fsync would block the whole loop: refuse to run like that
        raise FiberappError("gevent monkey-patching did not take: " + "; ".join(problems))
    notifier = Notifier()
    stop_requested = gevent.event.Event()
    signals = {"stop": 0}

    def on_stop_signal():
        signals["stop"] += 1
        if signals["stop"] > 1:
            log.warning("second stop signal: exiting at once")
            logging.shutdown()
            os._exit(1)
        log.info("stop signal: draining (deadline %.1fs)", cfg.shutdown_timeout)
        stop_requested.set()

    app = App(cfg, notifier=notifier, config_path=config_path,
              cli_overrides=cli_overrides, cli_scripts=cli_scripts)
    handlers = [gevent.signal_handler(signal.SIGTERM, on_stop_signal),
                gevent.signal_handler(signal.SIGINT, on_stop_signal),
                gevent.signal_handler(signal.SIGHUP, lambda: gevent.spawn(app.reload))]
    write_pidfile(cfg.pidfile_path)
    try:
        try:
            app.start()
        except BaseException:
            app.stop(timeout=0)
            raise
        stop_requested.wait()
        app.stop(timeout=cfg.shutdown_timeout)
        log.info("stopped cleanly")
        return 0
    finally:
        for handler in handlers:
            handler.cancel()
        remove_pidfile(cfg.pidfile_path)
