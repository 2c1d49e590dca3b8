"""The fiber runtime: everything below the queue store and the edge wrappers.

Reading order: patch (the one monkey-patch), clock (the one place time is read),
errors, fiber (named fibers, registry, the Runtime), sync (Channel, Cond),
accounting (the per-thread switch hook: CPU per fiber, who holds the loop),
watchdog (a native thread reporting fibers that hold the loop), supervisor
(restart with backoff).

Importing this package never patches anything; call fiberapp.runtime.patch.patch_all()
first (the CLI and the test suite do).
"""
