"""Raw-socket client helpers for the HTTP server tests (no sleeps: blocking reads with a
guard timeout, and condition polling that yields to the loop)."""
import socket

import gevent
import httptools
from tests.waiting import wait_for  # noqa: F401  (re-exported for the tests here)


class RawClient:
    """A plain TCP client that speaks HTTP by hand and parses responses with httptools."""

    def __init__(self, address, timeout=5.0):
        self.sock = socket.create_connection(address, timeout=timeout)
        self.responses = []
        self._parser = httptools.HttpResponseParser(self)
        self._cur = None
        self.eof = False

    # httptools callbacks
    def on_message_begin(self):
        self._cur = {"headers": {}, "body": b""}

    def on_header(self, name, value):
        self._cur["headers"][name.decode().lower()] = value.decode()

    def on_body(self, body):
        self._cur["body"] += body

    def on_message_complete(self):
        self._cur["status"] = self._parser.get_status_code()
        self.responses.append(self._cur)

    def send(self, data):
        self.sock.sendall(data)

    def read_response(self):
        """The next complete response as a dict(status, headers, body); AssertionError at EOF."""
        while not self.responses:
            data = self.sock.recv(65536)
            if not data:
                self.eof = True
                raise AssertionError("connection closed before a complete response")
            self._parser.feed_data(data)
        return self.responses.pop(0)

    def read_raw(self, n=65536):
        return self.sock.recv(n)

    def closed_by_peer(self):
        """Block (guarded by the socket timeout) until the server closes; True on EOF/reset."""
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
                try:
                    self._parser.feed_data(data)
                except httptools.HttpParserError:
                    pass  # bytes after an error reply: only the close matters here
        except ConnectionResetError:
            return True

    def nothing_pending(self):
        """True when no byte is waiting to be read right now (after letting the loop run)."""
        for _ in range(20):
            gevent.sleep(0)
        self.sock.setblocking(False)
        try:
            self.sock.recv(1, socket.MSG_PEEK)  # data or EOF: something happened
            return False
        except BlockingIOError:
            return True
        finally:
            self.sock.settimeout(5.0)

    def close(self):
        self.sock.close()


def get(path, extra=b"", version=b"1.1"):
    return b"GET " + path.encode() + b" HTTP/" + version + b"\r\nHost: t\r\n" + extra + b"\r\n"
