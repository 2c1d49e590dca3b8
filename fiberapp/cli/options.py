"""Options shared by the server commands, and config loading with CLI-grade error messages."""
import functools
import os
import sys

import click

from fiberapp import config as config_mod

SERVER_OPTIONS = (
    click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False),
                 envvar="FIBERAPP_CONFIG", help="TOML config file (env FIBERAPP_CONFIG)."),
    click.option("--listen", "-l", help="HOST:PORT for the HTTP server (default 127.0.0.1:8080; port 0 = any)."),
    click.option("--data-dir", "-d", help="Directory for the WAL, snapshots, pidfile and console socket (default ./var)."),
    click.option("--wal-mode", type=click.Choice(["none", "write", "fsync"]), help="Durability of each change."),
    click.option("--log-level", type=click.Choice(config_mod._LOG_LEVELS, case_sensitive=False)),
    click.option("--log-format", type=click.Choice(["plain", "json"])),
    click.option("--log-file", help="Log to this file (reopened on reload) instead of stderr."),
    click.option("--console-socket", help="Unix socket of the admin console (default <data-dir>/console.sock)."),
    click.option("--pidfile", help="Pidfile (default <data-dir>/fiberapp.pid)."),
)


def server_options(fn):
    for option in reversed(SERVER_OPTIONS):
        fn = option(fn)
    return fn


def overrides_from(kwargs):
    """CLI flag values (None = not given) keyed by config name."""
    out = {}
    for name in ("listen", "data_dir", "wal_mode", "log_level", "log_format", "log_file",
                 "console_socket", "pidfile"):
        value = kwargs.get(name)
        if value is not None:
            out[name] = value.upper() if name == "log_level" else value
    return out


def load_config(config_path, overrides, scripts=()):
    """Load the config or exit 2 listing every problem (before any data is touched)."""
    try:
        cfg = config_mod.load(config_path, overrides=overrides)
    except config_mod.ConfigError as exc:
        click.echo(f"fiberapp: {exc}", err=True)
        sys.exit(2)
    if scripts:
        cfg._values["scripts"] = list(cfg.scripts) + [os.path.abspath(s) for s in scripts]
    return cfg


def admin_target(fn):
    """Options for commands that talk to a running server: they find it through the config."""
    @click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False), envvar="FIBERAPP_CONFIG")
    @click.option("--data-dir", "-d")
    @click.option("--console-socket")
    @click.option("--pidfile")
    @functools.wraps(fn)
    def wrapper(config_path, data_dir, console_socket, pidfile, **kwargs):
        cfg = load_config(config_path, overrides_from(
            {"data_dir": data_dir, "console_socket": console_socket, "pidfile": pidfile}))
        return fn(cfg, **kwargs)
    return wrapper
