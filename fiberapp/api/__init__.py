"""fiberapp.api: the HTTP API over the queue store (translation only).

    api = fiberapp.api.install(router, store=store, runtime=runtime,
                               persistence=persistence, registry=registry,
                               config=config, health=app.health_status)
    ...
    api.stop()

install() registers every route of routes.ROUTES (plus /health and /metrics) on the
given fiberapp.http Router and returns the Api context. check_bind_security() is the
start-up check the app runs before binding.
"""
from .auth import check_bind_security
from .errors import ApiError, InsecureBind


def install(router, **pieces):
    """Register the API on ``router``; see fiberapp.api.mount.install for the arguments."""
    from .mount import install as _install  # the HTTP edge is imported only when serving

    return _install(router, **pieces)


__all__ = ["install", "check_bind_security", "ApiError", "InsecureBind"]
