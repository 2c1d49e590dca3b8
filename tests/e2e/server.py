"""Run the real `fiberapp` CLI in a subprocess, the way a user or systemd would.

Readiness is learnt the way systemd learns it: the test binds a notify socket, passes it as
NOTIFY_SOCKET, and waits for READY=1 (whose STATUS carries the bound port, so port 0 works).
No sleeps: every wait is on a socket or a process.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request

CLI = [sys.executable, "-m", "fiberapp"]


def cli(*args, env=None, timeout=60, input=None):
    """Run one `fiberapp ...` command to completion."""
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, env=env, input=input)


class Server:
    def __init__(self, tmp_path, *args, env=None, config=None):
        self.tmp = tmp_path
        self.data_dir = str(tmp_path / "data")
        self.args = [str(a) for a in args]
        self.env = dict(os.environ, **(env or {}))
        self.config = config
        self.proc = None
        self.port = None
        self.messages = []
        self.log_path = tmp_path / "server.log"
        self._notify = None

    @property
    def base_args(self):
        args = ["--listen", "127.0.0.1:0", "--data-dir", self.data_dir]
        if self.config:
            args += ["--config", str(self.config)]
        return args

    def start(self, timeout=30):
        path = str(self.tmp / "notify.sock")
        if os.path.exists(path):  # a previous server in the same test (a restart)
            os.unlink(path)
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(path)
        self._notify.settimeout(timeout)
        env = dict(self.env, NOTIFY_SOCKET=path)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(CLI + ["run"] + self.base_args + self.args, env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        return self.wait_for("READY=1", timeout)

    def wait_for(self, state, timeout=30):
        """Wait for a notify datagram containing `state`; returns the datagram text.
        Raises if the process exits first (with its log)."""
        self._notify.settimeout(0.2)
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                message = self._notify.recv(4096).decode()
            except socket.timeout:
                if self.proc.poll() is not None:
                    raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()}")
                continue
            self.messages.append(message)
            match = re.search(r"STATUS=listening on .*:(\d+)", message)
            if match:
                self.port = int(match.group(1))
            if state in message.split("\n"):
                return message
        raise AssertionError(f"no {state} within {timeout}s:\n{self.log()}")

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def request(self, method, path, body=None, headers=None, timeout=10):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers=dict({"Content-Type": "application/json"}, **(headers or {})))
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
                return resp.status, (json.loads(raw) if raw and resp.headers.get_content_type() == "application/json" else raw)
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw)
            except ValueError:
                return exc.code, raw

    def signal(self, signum):
        self.proc.send_signal(signum)

    def wait(self, timeout=30):
        return self.proc.wait(timeout)

    def stop(self, timeout=30):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._notify is not None:
            self._notify.close()
            self._notify = None
        return self.proc.returncode

    def log(self):
        try:
            self._log.flush()
        except (AttributeError, ValueError):
            pass
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""
