"""The `fiberapp` command.

Monkey-patching comes first, before click or anything that might import psycopg, redis or
ssl: psycopg picks its wait function at import time (see fiberapp/runtime/patch.py).
"""
from fiberapp.runtime.patch import patch_all

patch_all()

import click  # noqa: E402

from fiberapp.cli import daemon  # noqa: E402
from fiberapp.cli.admin import check_config, console, reload, snapshot, top  # noqa: E402
from fiberapp.cli.serve import run  # noqa: E402


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fiberapp")
def cli():
    """fiberapp: a Python application server with fibers, a durable queue store and an HTTP API."""


cli.add_command(run)
for command in (daemon.start, daemon.stop, daemon.status, daemon.restart):
    cli.add_command(command)
for command in (reload, console, top, check_config, snapshot):
    cli.add_command(command)


# Command groups owned by other parts of the package; each module imports nothing heavy.
from fiberapp.cli.queue import queue  # noqa: E402
from fiberapp.cli.wal import wal  # noqa: E402
from fiberapp.loadgen.cli import bench  # noqa: E402

for group in (wal, queue, bench):
    cli.add_command(group)


def main():
    cli(prog_name="fiberapp")
