"""HTTPConfig: the server's knobs, each limit with the answer it produces.

    max_header_size  request line + headers, bytes        -> 431, connection closed
    max_body_size    body, bytes (declared or chunked)     -> 413, connection closed
    header_timeout   seconds from a request's first byte (or the connection's accept)
                     until its headers are complete        -> connection closed
    body_timeout     seconds without progress while a body is arriving -> closed
    idle_timeout     seconds a keep-alive connection may wait for its next request -> closed
    send_timeout     seconds a response write may stall (client not reading) -> closed
    max_connections  connections served at once; when full the server stops accepting
                     (new clients wait in the listen backlog: backpressure)
    backlog          the listen backlog
    access_log       log one line per request to the "fiberapp.http.access" logger
"""
from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class HTTPConfig:
    max_header_size: int = 16 * 1024
    max_body_size: int = 1024 * 1024
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    idle_timeout: float = 60.0
    send_timeout: float = 30.0
    max_connections: int = 10_000
    backlog: int = 1024
    access_log: bool = False

    def __post_init__(self):
        for name in ("max_header_size", "max_body_size", "max_connections", "backlog"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"http.{name} must be a positive integer, got {value!r}")
        for name in ("header_timeout", "body_timeout", "idle_timeout", "send_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"http.{name} must be a positive number of seconds, got {value!r}")
        if not isinstance(self.access_log, bool):
            raise ValueError(f"http.access_log must be true or false, got {self.access_log!r}")

    @classmethod
    def from_mapping(cls, mapping):
        """Build from a config section (dict); unknown keys are an error, not ignored."""
        known = {f.name for f in fields(cls)}
        unknown = set(mapping) - known
        if unknown:
            raise ValueError(f"unknown http setting(s): {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})")
        return cls(**mapping)

    def as_dict(self):
        return asdict(self)
