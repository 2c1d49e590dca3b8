"""Logging carries the fiber name (plain and JSON); the systemd notify datagrams."""
import io
import logging
import os
import socket

import orjson

from fiberapp import logs
from fiberapp.runtime.fiber import Runtime
from fiberapp.sdnotify import Notifier


def _capture(fmt):
    stream = io.StringIO()
    handler = logs.configure("DEBUG", fmt, stream=stream)
    return stream, handler


def teardown_function(_):
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_fiberapp", False):
            root.removeHandler(h)


def test_json_lines_carry_the_fiber_name():
    stream, _ = _capture("json")
    runtime = Runtime(watchdog_limit=None, cpu_accounting=False)
    runtime.spawn(lambda: logging.getLogger("t").info("from %s", "inside"), name="worker-7").join(5)
    logging.getLogger("t").warning("outside")
    first, second = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert first["fiber"] == "worker-7" and first["msg"] == "from inside" and first["level"] == "INFO"
    assert second["fiber"] == "main" and second["logger"] == "t"


def test_plain_lines_carry_the_fiber_name():
    stream, _ = _capture("plain")
    runtime = Runtime(watchdog_limit=None, cpu_accounting=False)
    runtime.spawn(lambda: logging.getLogger("t").error("x"), name="ticker").join(5)
    assert "ERROR [ticker] t: x" in stream.getvalue()


def test_reconfigure_replaces_the_handler_and_reopens_the_file(tmp_path):
    path = tmp_path / "app.log"
    logs.configure("INFO", "plain", str(path))
    logging.getLogger("t").info("one")
    os.rename(path, tmp_path / "app.log.1")  # what logrotate does
    logs.configure("INFO", "plain", str(path))  # what reload does
    logging.getLogger("t").info("two")
    assert "one" in (tmp_path / "app.log.1").read_text()
    assert "two" in path.read_text() and "one" not in path.read_text()
    ours = [h for h in logging.getLogger().handlers if getattr(h, "_fiberapp", False)]
    assert len(ours) == 1


def _listen(path_or_abstract):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path_or_abstract)
    sock.settimeout(5)
    return sock


def test_notify_datagrams(tmp_path):
    path = str(tmp_path / "notify")
    sock = _listen(path)
    n = Notifier(env={"NOTIFY_SOCKET": path})
    assert n.ready("listening on x:1")
    assert sock.recv(100) == b"READY=1\nSTATUS=listening on x:1"
    n.reloading()
    lines = sock.recv(100).decode().split("\n")
    assert lines[0] == "RELOADING=1" and lines[1].startswith("MONOTONIC_USEC=")
    n.stopping()
    assert sock.recv(100) == b"STOPPING=1"


def test_notify_abstract_socket():
    name = f"fiberapp-test-{os.getpid()}"
    sock = _listen("\0" + name)
    assert Notifier(env={"NOTIFY_SOCKET": "@" + name}).watchdog()
    assert sock.recv(100) == b"WATCHDOG=1"


def test_notify_is_a_no_op_without_systemd():
    n = Notifier(env={})
    assert not n.enabled and n.ready() is False and n.watchdog_interval is None


def test_watchdog_interval_is_half_of_watchdog_usec():
    assert Notifier(env={"WATCHDOG_USEC": "4000000"}).watchdog_interval == 2.0
    # WATCHDOG_PID naming another process means the watchdog is not ours
    assert Notifier(env={"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}).watchdog_interval is None
