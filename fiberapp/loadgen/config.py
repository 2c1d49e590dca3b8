"""The load generator's options (TaxiConfig) and the rush-hour order-rate curve."""
import math
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit


class LoadgenError(Exception):
    """Bad options or an unusable target; the CLI prints it and exits non-zero."""


@dataclass
class TaxiConfig:
    url: str = "http://127.0.0.1:8080"
    drivers: int = 20_000
    interval: float = 5.0  # seconds between a driver's pings
    orders: float = 20.0  # orders per second, average over the run
    duration: float = 60.0
    accept: float = 0.8  # probability a driver accepts an offer
    ride_time: float = 30.0  # mean seconds from accept to complete
    patience: float = 60.0  # mean seconds a client waits for a driver before cancelling
    client_poll: float = 2.0
    client_conns: int = 32
    per_conn: int = 0  # drivers per keep-alive connection; 0: 1 if every connection fits one process, else AUTO_PER_CONN
    rush: float = 0.6
    ramp: float = 0.0  # drivers start (and connect) spread over this many seconds; 0: one interval
    timeout: float = 10.0  # real-time guard on each request, on top of a long-poll's wait
    seed: int = 1
    processes: int = 0  # 0: as many as the open-files limit requires
    center_lat: float = 55.75
    center_lon: float = 37.62
    radius_deg: float = 0.1
    # Set per worker process when connections are spread:
    first_driver: int = 1
    share: float = 1.0  # this process's share of the order rate
    worker: int = 0

    def check(self):
        problems = []
        if self.drivers < 0:
            problems.append("--drivers must be >= 0")
        if not self.interval > 0:
            problems.append("--interval must be > 0")
        if self.orders < 0:
            problems.append("--orders must be >= 0")
        if not self.duration > 0:
            problems.append("--duration must be > 0")
        if not 0 <= self.accept <= 1:
            problems.append("--accept must be in [0, 1]")
        if not 0 <= self.rush < 1:
            problems.append("--rush must be in [0, 1)")
        if self.ramp < 0:
            problems.append("--ramp must be >= 0")
        if self.per_conn < 0:
            problems.append("--per-conn must be >= 0")
        if self.client_conns < 1:
            problems.append("--client-conns must be >= 1")
        if self.ride_time <= 0 or self.patience <= 0 or self.client_poll <= 0 or self.timeout <= 0:
            problems.append("--ride-time, --patience, --client-poll and --timeout must be > 0")
        parts = urlsplit(self.url)
        if parts.scheme != "http" or not parts.hostname:
            problems.append(f"--url must be http://host[:port][/prefix], got {self.url!r} (no TLS: put the generator behind the TLS terminator)")
        if problems:
            raise LoadgenError("; ".join(problems))
        return self

    def to_json(self):
        return asdict(self)


def order_rate(cfg, elapsed):
    """The rush-hour curve: orders per second at ``elapsed`` seconds into the run."""
    x = min(max(elapsed / cfg.duration, 0.0), 1.0)
    return cfg.orders * cfg.share * (1.0 + cfg.rush * math.cos(2.0 * math.pi * (x - 0.5)))
