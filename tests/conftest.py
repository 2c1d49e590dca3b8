"""Test-suite root. Patching happens here first, exactly as the CLI does it."""
from fiberapp.runtime.patch import patch_all

patch_all()

import signal  # noqa: E402  (after patching, on purpose)

import pytest  # noqa: E402


@pytest.hookimpl(hookwrapper=True, optionalhook=True)
def pytest_timeout_set_timer(item, settings):
    """When a test times out, print every greenlet's stack before pytest-timeout fails it.

    pytest-timeout's own dump shows threads only; a hung fiber is a greenlet parked in the
    hub, invisible there. We wrap the SIGALRM handler it has just installed.
    """
    yield
    if settings.method != "signal":
        return
    inner = signal.getsignal(signal.SIGALRM)
    if not callable(inner):
        return

    def dump_greenlets_then_fail(signum, frame):
        from gevent.util import format_run_info

        terminal = item.config.get_terminal_writer()
        terminal.sep("+", title="Timeout: greenlets and fibers")
        terminal.write("\n".join(format_run_info()) + "\n")
        inner(signum, frame)

    signal.signal(signal.SIGALRM, dump_greenlets_then_fail)
