"""The taxi app's own settings, read from TAXI_* environment variables.

fiberapp's config file has no section for a script's settings (unknown keys are refused),
so the script takes its knobs from the environment, the way a systemd unit or a test
passes them. Every problem is reported at once, as fiberapp's own config does.

    TAXI_ACCEPT_TIMEOUT   60    an order nobody has accepted by then is cancelled (s)
    TAXI_OFFER_TTR        15    how long one driver has to answer an offer (s)
    TAXI_OFFLINE_AFTER    30    a driver not heard from for this long is offline (s)
    TAXI_RETRY_DELAY      1     no free driver: look again after this (s)
    TAXI_HISTORY_BATCH    500   at most this many events per PostgreSQL transaction
    TAXI_HISTORY_LINGER   0.2   a short batch waits this long for more events (s)
    TAXI_HISTORY_BACKOFF  0.5   first wait after a failed write; doubles up to 30 s
    TAXI_KEEP_FINISHED    600   finished orders stay in memory this long, then are read
                                back from PostgreSQL (s)
    TAXI_MAX_POLL         60    the longest offer long-poll a driver may ask for (s)
    TAXI_TUBE_PREFIX      taxi  prefix of the queue store's tube names
"""
import os
import re
from dataclasses import dataclass, fields

from deploy.taxi.errors import TaxiError


class TaxiConfigError(TaxiError):
    """A TAXI_* variable is wrong; raised at start, never in a request."""

    status = 500
    code = "taxi_config"


@dataclass(frozen=True)
class Settings:
    accept_timeout: float = 60.0
    offer_ttr: float = 15.0
    offline_after: float = 30.0
    retry_delay: float = 1.0
    history_batch: int = 500
    history_linger: float = 0.2
    history_backoff: float = 0.5
    keep_finished: float = 600.0
    max_poll: float = 60.0
    tube_prefix: str = "taxi"

    def __post_init__(self):
        problems = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in (float, "float") and not (isinstance(value, (int, float)) and value > 0):
                problems.append(f"{f.name} must be a positive number, got {value!r}")
            if f.type in (int, "int") and not (isinstance(value, int) and value >= 1):
                problems.append(f"{f.name} must be an integer >= 1, got {value!r}")
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", str(self.tube_prefix)):
            problems.append(f"tube_prefix must be letters, digits and -_. (got {self.tube_prefix!r})")
        if problems:
            raise TaxiConfigError("; ".join(problems))

    @classmethod
    def from_env(cls, env=None):
        env = os.environ if env is None else env
        values, problems = {}, []
        for f in fields(cls):
            name = "TAXI_" + f.name.upper()
            if name not in env:
                continue
            raw = env[name].strip()
            try:
                values[f.name] = {"float": float, "int": int}.get(
                    f.type if isinstance(f.type, str) else f.type.__name__, str)(raw)
            except ValueError:
                problems.append(f"{name}={raw!r} is not a {f.type if isinstance(f.type, str) else f.type.__name__}")
        if problems:
            raise TaxiConfigError("; ".join(problems))
        return cls(**values)

    def tube(self, suffix):
        return f"{self.tube_prefix}_{suffix}"
