"""The admin console: an interactive Python prompt inside the running server.

Served over a Unix socket created with mode 0600 (only the server's user can connect; the
console has no other authentication). gevent.backdoor does the REPL; the namespace holds
`app` plus a few helpers. `fiberapp console` connects to it; `-e EXPR` sends one expression.
"""
import errno
import logging
import os
import socket

import orjson
from gevent.backdoor import BackdoorServer

log = logging.getLogger("fiberapp.console")

BANNER = ("fiberapp console: `app` is the running application (also `store`, `runtime`);\n"
          "try app.info(), runtime.top(), store.statistics(), app.snapshot(), app.reload().")
PROMPT = ">>> "


def bind_unix(path):
    """Bind a listening Unix socket at path, mode 0600 from birth (umask), replacing a stale
    socket file but refusing to replace anything else."""
    if os.path.exists(path):
        import stat
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # stale: nobody listens
        else:
            raise OSError(errno.EADDRINUSE, f"another server is listening on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(16)
    return sock


class _Console(BackdoorServer):
    def handle(self, conn, address):
        try:
            super().handle(conn, address)
        except OSError as exc:  # a client that hangs up mid-line is not an error
            if exc.errno not in (errno.EPIPE, errno.EBADF, errno.ECONNRESET):
                log.warning("console session failed: %s", exc)


def make_namespace(app):
    def as_json(obj):
        """Print obj as one JSON line (what `fiberapp top` and `snapshot` read)."""
        print(orjson.dumps(obj, default=str).decode())

    return {"app": app, "store": app.store, "runtime": app.runtime, "as_json": as_json}


class ConsoleServer:
    def __init__(self, app, path):
        self.path = path
        self._server = _Console(bind_unix(path), locals=make_namespace(app), banner=BANNER)

    def start(self):
        self._server.start()

    def stop(self):
        self._server.stop(timeout=1)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def read_until_prompt(sock, buf=b""):
    """Read from sock until the output ends with a prompt; returns (text_before_prompt, prompt)
    or (text, None) at EOF."""
    while True:
        for prompt in (b">>> ", b"... "):
            if buf.endswith(prompt):
                return buf[: -len(prompt)].decode(errors="replace"), prompt.decode()
        chunk = sock.recv(65536)
        if not chunk:
            return buf.decode(errors="replace"), None
        buf += chunk


def evaluate(path, source, timeout=30.0):
    """Connect to the console at path, run one statement or expression, return its output."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        read_until_prompt(sock)
        sock.sendall(source.encode() + b"\n")
        out, prompt = read_until_prompt(sock)
        if prompt == "... ":  # a compound statement wants a blank line to finish
            sock.sendall(b"\n")
            more, _ = read_until_prompt(sock)
            out += more
        return out.replace("\r\n", "\n")
    finally:
        sock.close()
