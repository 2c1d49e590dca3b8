"""Bearer-token authentication for /api/v1, and the start-up check on where we listen.

The token is compared with hmac.compare_digest so the time taken does not reveal how
much of a guess was right. /health and /metrics stay open: load balancers and scrapers
call them without credentials, and they reveal no task data.
"""
import hmac
import ipaddress

from .errors import InsecureBind, Unauthorized


def check_bind_security(listen, api_token, allow_insecure=False):
    """Refuse (InsecureBind) to serve a non-loopback address without an api_token.

    ``listen`` is "host:port" (IPv6 may be bracketed) or a (host, port) tuple. The
    lead's start-up calls this before binding; ``allow_insecure`` is the explicit opt-out.
    """
    host = listen[0] if isinstance(listen, tuple) else _host_of(listen)
    if api_token or allow_insecure or is_loopback(host):
        return
    raise InsecureBind(
        f"refusing to serve the API on {host or 'all interfaces'} without api_token; "
        "set api_token, listen on 127.0.0.1, or set allow_insecure = true"
    )


def is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def _host_of(listen):
    host, sep, _port = str(listen).rpartition(":")
    if not sep:
        host = str(listen)
    return host.strip("[]")


class TokenCheck:
    """Checks ``Authorization: Bearer <token>``; a None/empty token disables the check."""

    def __init__(self, token):
        self._expected = ("Bearer " + token).encode() if token else None

    @property
    def enabled(self):
        return self._expected is not None

    def check(self, header_value):
        if self._expected is None:
            return
        if not header_value:
            raise Unauthorized("missing Authorization: Bearer <token>")
        given = header_value.encode("utf-8", "surrogateescape") if isinstance(header_value, str) else bytes(header_value)
        if not hmac.compare_digest(given, self._expected):
            raise Unauthorized("wrong API token")
