"""Configuration: a TOML file, then environment variables, then CLI flags (rising precedence).

Every key is declared once in SCHEMA with its type, default, environment variable and a check.
load() collects every problem before it raises, so a user fixing a config file sees all of them
at once (ConfigError.problems: a list of (key, message)). Nothing here touches the data directory.

Sections [http], [pg] and [redis] are tables; [pg] may also hold named pools as sub-tables
([pg.reports] dsn = ...), which the app builds as extra pools.
"""
import os
import tomllib
from dataclasses import dataclass

from fiberapp.runtime.errors import FiberappError


class ConfigError(FiberappError):
    """The configuration is invalid; .problems lists every (key, message)."""

    def __init__(self, problems):
        self.problems = list(problems)
        lines = "\n".join(f"  {key}: {message}" for key, message in self.problems)
        super().__init__(f"invalid configuration ({len(self.problems)} problem(s)):\n{lines}")


def parse_listen(value):
    """'host:port' -> (host, port). IPv6 hosts may be bracketed: [::1]:8080. Port 0 = any free port."""
    if not isinstance(value, str) or ":" not in value:
        raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:8080")
    host, _, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host:
        raise ValueError("missing host in HOST:PORT")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"port must be a number from 0 to 65535, got {port!r}")
    return host, int(port)


# -- checks: each takes a value of the right type and raises ValueError with a message ----------

def _one_of(*choices):
    def check(value):
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}; got {value!r}")
    return check


def _at_least(low, *, strict=False):
    def check(value):
        if value < low or (strict and value == low):
            raise ValueError(f"must be {'>' if strict else '>='} {low}; got {value!r}")
    return check


def _listen(value):
    parse_listen(value)


def _scripts(value):
    for item in value:
        if not isinstance(item, str) or not item:
            raise ValueError("must be a list of script paths")


@dataclass(frozen=True)
class Key:
    name: str
    type: type
    default: object
    check: object = None
    env: bool = True  # FIBERAPP_<NAME> is read


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

SCHEMA = {k.name: k for k in (
    Key("listen", str, "127.0.0.1:8080", _listen),
    Key("data_dir", str, "./var"),
    Key("wal_mode", str, "write", _one_of("none", "write", "fsync")),
    Key("api_token", str, None),
    Key("allow_insecure", bool, False),
    Key("log_level", str, "INFO", _one_of(*_LOG_LEVELS)),
    Key("log_format", str, "plain", _one_of("plain", "json")),
    Key("log_file", str, None),
    Key("console_socket", str, None),   # default: <data_dir>/console.sock
    Key("pidfile", str, None),          # default: <data_dir>/fiberapp.pid
    Key("scripts", list, [], _scripts),
    Key("session_ttl", float, 60.0, _at_least(0, strict=True)),
    Key("shutdown_timeout", float, 10.0, _at_least(0)),
    Key("watchdog_limit", float, 0.1, _at_least(0, strict=True)),
    # per-fiber CPU time for top: true (always, ~1 µs per switch), false, or "on-demand"
    # (from the first `fiberapp top` / GET of the fiber rows until nobody looked for 60 s)
    Key("cpu_accounting", "accounting", "on-demand"),
    Key("gc_freeze", bool, True),        # freeze the heap after recovery (see runtime.heap)
    Key("gc_young_threshold", int, 10_000, _at_least(0)),  # 0: CPython's own (700)
    Key("max_task_size", int, 1 << 20, _at_least(1)),
    Key("wal_max_size", int, 64 << 20, _at_least(4096)),
    Key("checkpoint_interval", float, 3600.0, _at_least(0)),
    Key("checkpoint_count", int, 2, _at_least(1)),
    Key("checkpoint_wal_threshold", int, 1 << 30, _at_least(1)),
    Key("force_recovery", bool, False),
)}

# Tables passed through to their own builders, which validate them (fiberapp.db).
PASSTHROUGH_TABLES = ("pg", "redis")


def _as_bool(value, source):
    """True or False for a TOML boolean, or (from env/CLI) 1/true/yes/on or 0/false/no/off;
    None for anything else."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and source != "file":
        low = value.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
    return None


def _coerce(key, value, source):
    """Convert value (from TOML, or a string from env/CLI) to key.type; raise ValueError."""
    t = key.type
    if value is None:
        return None
    if t is bool:
        flag = _as_bool(value, source)
        if flag is None:
            raise ValueError(f"must be true or false; got {value!r}")
        return flag
    if t is int:
        if isinstance(value, bool):
            raise ValueError(f"must be an integer; got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, str) and source != "file":
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ValueError(f"must be an integer; got {value!r}")
    if t is float:
        if isinstance(value, bool):
            raise ValueError(f"must be a number of seconds; got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str) and source != "file":
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise ValueError(f"must be a number; got {value!r}")
    if t == "accounting":  # true, false or "on-demand"
        if value == "on-demand" or (isinstance(value, str) and source != "file"
                                    and value.strip().lower() == "on-demand"):
            return "on-demand"
        flag = _as_bool(value, source)
        if flag is not None:
            return flag
        raise ValueError(f'must be true, false or "on-demand"; got {value!r}')
    if t is list:
        if isinstance(value, list):
            return value
        if isinstance(value, str) and source != "file":
            return [part.strip() for part in value.split(",") if part.strip()]
        raise ValueError(f"must be a list; got {value!r}")
    if t is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"must be a string; got {value!r}")
    raise AssertionError(t)  # pragma: no cover


class Config:
    """The merged, validated configuration. Attribute access for top-level keys;
    .http (the [http] table, validated against fiberapp.http.config.HTTPConfig), .pg and .redis (raw tables, or None), .sources
    (key -> "default" | "file" | "env" | "cli") for `check-config` and debugging."""

    def __init__(self, values, http, tables, sources, path=None):
        self._values = values
        self.http = http
        self.pg = tables.get("pg")
        self.redis = tables.get("redis")
        self.sources = sources
        self.path = path

    def __getattr__(self, name):
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def as_dict(self):
        out = dict(self._values)
        out["http"] = dict(self.http)
        if self.pg is not None:
            out["pg"] = self.pg
        if self.redis is not None:
            out["redis"] = self.redis
        if out.get("api_token"):
            out["api_token"] = "***"
        return out

    @property
    def listen_address(self):
        return parse_listen(self.listen)

    @property
    def console_path(self):
        return self.console_socket or os.path.join(self.data_dir, "console.sock")

    @property
    def pidfile_path(self):
        return self.pidfile or os.path.join(self.data_dir, "fiberapp.pid")


def _check_http(table):
    """Validate [http] against the server's own HTTPConfig (the one place its knobs and
    defaults are defined), key by key so that every problem is reported."""
    from dataclasses import fields

    from fiberapp.http.config import HTTPConfig

    known = {f.name for f in fields(HTTPConfig)}
    problems = []
    for name, value in table.items():
        if name not in known:
            problems.append((f"http.{name}", "unknown key"))
            continue
        try:
            HTTPConfig(**{name: value})
        except (ValueError, TypeError) as exc:
            problems.append((f"http.{name}", str(exc).removeprefix(f"http.{name} ")))
    return problems


def _http_settings(table):
    from fiberapp.http.config import HTTPConfig

    return HTTPConfig.from_mapping(table).as_dict()


def read_file(path):
    """Parse a TOML file; raise ConfigError naming the file on any problem."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError([("config", f"file not found: {path}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([("config", f"{path} is not valid TOML: {exc}")]) from None
    except OSError as exc:
        raise ConfigError([("config", f"cannot read {path}: {exc.strerror}")]) from None


def load(path=None, env=None, overrides=None):
    """Build a Config from the file at path (optional), env (default os.environ) and
    overrides (CLI flags: key -> value, None meaning 'not given'). Raises ConfigError
    listing every problem found."""
    env = os.environ if env is None else env
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    raw = read_file(path) if path else {}
    problems = []
    values, sources = {}, {}

    for name in raw:
        if name not in SCHEMA and name != "http" and name not in PASSTHROUGH_TABLES:
            problems.append((name, "unknown key"))
    for name in overrides:
        if name not in SCHEMA:
            problems.append((name, "unknown key"))

    for name, key in SCHEMA.items():
        value, source = key.default, "default"
        if name in raw:
            value, source = raw[name], "file"
        env_name = "FIBERAPP_" + name.upper()
        if key.env and env_name in env:
            value, source = env[env_name], "env"
        if name in overrides:
            value, source = overrides[name], "cli"
        try:
            value = _coerce(key, value, source)
            if value is not None and key.check is not None:
                key.check(value)
        except ValueError as exc:
            label = {"env": env_name, "cli": f"--{name.replace('_', '-')}"}.get(source, name)
            problems.append((label if source != "file" else name, str(exc)))
            value = key.default
        values[name], sources[name] = value, source

    http_raw = raw.get("http", {})
    if not isinstance(http_raw, dict):
        problems.append(("http", "must be a table"))
        http_raw = {}
    http_problems = _check_http(http_raw)
    problems += http_problems
    http = {} if http_problems else _http_settings(http_raw)

    tables = {}
    for name in PASSTHROUGH_TABLES:
        if name in raw:
            if not isinstance(raw[name], dict):
                problems.append((name, "must be a table"))
            else:
                tables[name] = raw[name]

    if not problems:
        from fiberapp.api.auth import check_bind_security
        from fiberapp.api.errors import InsecureBind

        try:
            check_bind_security(values["listen"], values["api_token"], values["allow_insecure"])
        except InsecureBind as exc:
            problems.append(("listen", str(exc)))
    if problems:
        raise ConfigError(problems)
    return Config(values, http, tables, sources, path=path)
