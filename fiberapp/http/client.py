"""HTTPClient for fiber scripts: keep-alive pooling with mandatory timeouts.

A thin wrapper over geventhttpclient (gevent-native, llhttp parser, greenlet-safe pool):

    client = HTTPClient(timeout=2.0, pool_size=8)
    resp = client.get("http://127.0.0.1:8080/api/v1/ping")
    resp.status, resp.headers["content-type"], resp.json()
    client.close()

One connection pool per (scheme, host, port), up to ``pool_size`` connections each;
fibers beyond that wait for a free connection. ``timeout`` is required: it bounds the
connect and every network wait (send, each receive), so no call can hang forever. A
timeout raises HTTPClientTimeout, a refused/broken connection HTTPClientConnectionError
(both HTTPClientError). The body is read in full; responses are plain data.
"""
import socket as _socket
from urllib.parse import urlsplit

import orjson
from geventhttpclient import HTTPClient as _GHC
from geventhttpclient.response import HTTPConnectionClosed, HTTPParseError

from .errors import HTTPClientConnectionError, HTTPClientError, HTTPClientTimeout


class ClientResponse:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # dict, lower-cased names
        self.body = body

    def json(self):
        return orjson.loads(self.body)

    def text(self):
        return self.body.decode("utf-8")

    def __repr__(self):
        return f"<ClientResponse {self.status} {len(self.body)} bytes>"


class HTTPClient:
    def __init__(self, *, timeout, connect_timeout=None, pool_size=10, headers=None):
        if timeout is None or isinstance(timeout, bool) or not timeout > 0:
            raise ValueError("HTTPClient needs a positive timeout (seconds): every call must be bounded")
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout) if connect_timeout else self.timeout
        self.pool_size = int(pool_size)
        self.headers = dict(headers or {})
        self._pools = {}
        self._closed = False

    def _pool(self, scheme, host, port):
        key = (scheme, host, port)
        pool = self._pools.get(key)
        if pool is None:
            if self._closed:
                raise HTTPClientError("client is closed")
            pool = _GHC(host, port=port, ssl=(scheme == "https"), concurrency=self.pool_size,
                        connection_timeout=self.connect_timeout, network_timeout=self.timeout,
                        headers=self.headers)
            self._pools[key] = pool
        return pool

    def request(self, method, url, *, body=None, json=None, headers=None):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = dict(headers or {})
        if json is not None:
            body = orjson.dumps(json)
            headers.setdefault("Content-Type", "application/json")
        pool = self._pool(parts.scheme, parts.hostname, port)
        try:
            resp = pool.request(method.upper(), target, body=body or b"", headers=headers)
            try:
                data = resp.read()
                return ClientResponse(resp.status_code, {k.lower(): v for k, v in resp.items()}, data)
            finally:
                resp.release()
        except (TimeoutError, _socket.timeout) as exc:
            raise HTTPClientTimeout(f"{method} {url}: no answer within {self.timeout}s") from exc
        except (HTTPConnectionClosed, HTTPParseError, OSError) as exc:
            raise HTTPClientConnectionError(f"{method} {url}: {exc}") from exc

    def get(self, url, **kw):
        return self.request("GET", url, **kw)

    def post(self, url, **kw):
        return self.request("POST", url, **kw)

    def put(self, url, **kw):
        return self.request("PUT", url, **kw)

    def delete(self, url, **kw):
        return self.request("DELETE", url, **kw)

    def close(self):
        self._closed = True
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
