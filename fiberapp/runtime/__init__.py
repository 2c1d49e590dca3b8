"""The fiber runtime: everything below the queue store and the edge wrappers.

Reading order: patch (the one monkey-patch), clock (the one place time is read),
errors, fiber (named fibers, registry, CPU accounting), sync (Channel, Cond),
supervisor, watchdog.

Importing this package never patches anything; call fiberapp.runtime.patch.patch_all()
first (the CLI and the test suite do).
"""
