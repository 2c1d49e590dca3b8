"""`fiberapp run`: the server in the foreground (what `start` runs in the background and what
systemd runs with Type=notify)."""
import logging
import sys

import click

from fiberapp.cli.options import load_config, overrides_from, server_options


@click.command()
@click.argument("scripts", nargs=-1, type=click.Path(dir_okay=False))
@server_options
@click.option("--force-recovery", is_flag=True, default=None,
              help="Skip damaged WAL records (each is logged) instead of refusing to start.")
def run(scripts, force_recovery, config_path, **kwargs):
    """Run the server in the foreground, with fiber SCRIPTS loaded. Ctrl-C stops it cleanly."""
    overrides = overrides_from(kwargs)
    if force_recovery:
        overrides["force_recovery"] = True
    cfg = load_config(config_path, overrides, scripts)

    from fiberapp import logs
    from fiberapp.daemon import serve

    logs.configure(cfg.log_level, cfg.log_format, cfg.log_file)
    try:
        code = serve(cfg, config_path=config_path, cli_overrides=overrides, cli_scripts=scripts)
    except Exception as exc:  # start-up failed: the reason, once, and a non-zero exit
        logging.getLogger("fiberapp").error("start-up failed: %s", exc, exc_info=_wants_traceback(exc))
        code = 1
    sys.exit(code)


def _wants_traceback(exc):
    """A user's mistake (bad config, data dir locked) reads best as one line; a failing
    script or a bug needs its traceback."""
    from fiberapp.runtime.errors import FiberappError
    from fiberapp.scripts import ScriptError
    from queues.errors import QueueError  # a damaged WAL, a locked data directory

    return isinstance(exc, ScriptError) or not isinstance(exc, (FiberappError, QueueError))
