"""The only place where gevent monkey-patching happens.

psycopg chooses its wait function, and psycopg_pool its locks and worker threads, at
import time: patching after they are imported leaves every query blocking the loop.
So the CLI calls patch_all() before it imports anything else, and the test suite's
conftest does the same. Library modules never patch on import.
"""
import sys

_PATCH_FIRST = ("psycopg", "psycopg_pool", "redis", "ssl")


def patch_all():
    """Monkey-patch the standard library for gevent. Idempotent.

    Returns the list of modules (from those that care) that were imported before
    patching, which start-up reports: their blocking behaviour is then undefined.
    """
    from gevent import monkey

    early = [name for name in _PATCH_FIRST if name in sys.modules and not monkey.is_module_patched("socket")]
    if not monkey.is_module_patched("socket"):
        monkey.patch_all()
    return early


def is_patched():
    from gevent import monkey

    return monkey.is_module_patched("socket") and monkey.is_module_patched("select")


def verify():
    """Check that the patch took where it matters; returns a list of problems (empty = fine).

    - the socket, select, thread and time modules are patched;
    - psycopg (imported now, after patching) picked a cooperative wait function and
      gevent's lock, not the C wait_c that blocks the whole loop.
    """
    from gevent import monkey

    problems = []
    for name in ("socket", "select", "threading", "time"):
        if not monkey.is_module_patched(name):
            problems.append(f"module {name!r} is not monkey-patched")
    try:
        import psycopg.waiting as waiting
    except ImportError:  # pragma: no cover - psycopg is an install requirement
        problems.append("psycopg is not installed")
    else:
        wait_c = getattr(waiting, "wait_c", None)
        if wait_c is not None and waiting.wait is wait_c:
            problems.append("psycopg chose wait_c (imported before patching): queries would block the loop")
    return problems
