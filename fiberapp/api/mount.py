"""install(): put the API's routes on a router, wrapped once each with auth and error
mapping, and start the API's two small fibers (session reaper, loop-lag probe)."""
import inspect

import orjson
from prometheus_client import CollectorRegistry

from fiberapp.http.errors import HTTPError
from fiberapp.http.router import Route

from . import openapi
from fiberapp.http.response import error_response

from .context import Api
from .errors import ApiError, NotFound, status_and_code
from .metrics import LoopLag, StoreCollector
from .routes import ROUTES

OWNER = "fiberapp.api"


def install(router, *, store=None, runtime=None, persistence=None, registry=None, config=None,
            health=None, clock=None, api_token=None, session_ttl=None, app=None, start=True,
            loop_lag_interval=1.0):
    """Register every API route on ``router`` and return the Api context.

    Pass the pieces, or ``app`` (fiberapp.app.App): then store, persistence, runtime,
    clock, registry, config and health are read from it, store and persistence at request
    time (the app installs the API before its store has recovered). ``config`` supplies
    ``api_token`` and ``session_ttl`` unless they are passed explicitly. ``health`` is a
    callable returning "ok" (200), a reason such as "recovering"/"draining" (503) or
    (status, body) as App.health() does; without it, health is derived from
    ``persistence.recovering`` and ``store.draining``. ``registry`` is the prometheus
    CollectorRegistry served at /metrics (a private one if None). With ``start`` (and a
    runtime) the session reaper and the loop-lag probe fibers are spawned; Api.stop()
    cancels them.
    """
    if app is not None:
        config = config if config is not None else getattr(app, "config", None)
        registry = registry if registry is not None else getattr(app, "registry", None)
    if api_token is None:
        api_token = getattr(config, "api_token", None)
    if session_ttl is None:
        session_ttl = getattr(config, "session_ttl", None) or 60.0
    if store is None and app is None:
        raise TypeError("install() needs store= (or app=)")
    api = Api(store, runtime, app=app, clock=clock, persistence=persistence,
              registry=registry if registry is not None else CollectorRegistry(),
              health=health, session_ttl=session_ttl, api_token=api_token)
    api.openapi_doc = orjson.dumps(openapi.document(ROUTES))

    for spec in ROUTES:
        router.add(spec.method, spec.path, _wrap(api, spec), owner=OWNER,
                   name=f"{spec.method} {spec.path}")
        api.routes.append(spec)
        api.matchers.append((spec.method, Route(spec.method, spec.path, spec.handler)))
    # Anything else under /api/v1 answers in the API's error shape (and after auth), not
    # the router's generic one.
    router.add("*", "/api/v1/{rest:path}", _wrap(api, None), owner=OWNER, name="/api/v1/*")

    runtime = api.runtime
    lag = LoopLag(api.clock, loop_lag_interval) if runtime is not None else None
    api.registry.register(StoreCollector(api, lag))
    if start and runtime is not None:
        api.sessions.start(runtime)
        api.add_fiber(runtime.spawn(lag.run, name="api-loop-lag"))
    return api


def _error_reply(exc):
    """The answer to an exception a handler raised (call it from an except clause): an
    HTTPError as itself, a mapped error as its status and code; anything else is re-raised
    (a bug in fiberapp: the server logs it and answers 500)."""
    if isinstance(exc, HTTPError):  # e.g. a query string that is not UTF-8
        return error_response(exc.status, exc.code, exc.message, list(exc.headers) or ())
    mapped = status_and_code(exc)
    if mapped is None:
        raise exc
    return error_response(*mapped, getattr(exc, "headers", None) or ())


def _wrap(api, spec):
    """The one wrapper per route: auth, then the handler, then error mapping."""
    if spec is None:
        handler = _no_route
        auth = True
    else:
        handler = spec.handler
        auth = spec.auth
    token = api.token if auth and api.token.enabled else None
    names = _positional(spec, handler)
    if names is not None and len(names) <= 2:
        # The path's parameters passed positionally (in the path's order, which is the
        # handler's, checked by _positional): `**request.params` builds a dict of keyword
        # arguments on every request, ~1,000-3,000 instructions.
        first, second = (names + (None, None))[:2]

        def call(request):
            try:
                if token is not None:
                    token.check(request.headers.get("authorization"))
                if first is None:
                    return handler(api, request)
                params = request.params
                if second is None:
                    return handler(api, request, params[first])
                return handler(api, request, params[first], params[second])
            except Exception as exc:
                return _error_reply(exc)

        call.__name__ = getattr(handler, "__name__", "api")
        call.__doc__ = getattr(handler, "__doc__", None)
        return call

    def call(request):
        try:
            if token is not None:
                token.check(request.headers.get("authorization"))
            return handler(api, request, **request.params)
        except Exception as exc:
            return _error_reply(exc)

    call.__name__ = getattr(handler, "__name__", "api")
    call.__doc__ = getattr(handler, "__doc__", None)
    return call


def _positional(spec, handler):
    """The route's parameter names if ``handler`` takes them positionally, right after
    (api, request) and in the path's order, with nothing else required; else None (the
    wrapper then passes them as keywords)."""
    if spec is None:
        return None
    names = Route(spec.method, spec.path, handler).names
    try:
        params = list(inspect.signature(handler).parameters.values())
    except (TypeError, ValueError):
        return None
    if len(params) < 2 + len(names):
        return None
    for param, name in zip(params[2:], names):
        if param.name != name or param.kind not in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            return None
    for param in params[2 + len(names):]:
        if param.default is param.empty and param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            return None
    return tuple(names)


def _no_route(api, request, rest):
    path = request.path
    allowed = sorted({method for method, route in api.matchers
                      if (route.pattern == path if route.static else route.match(path) is not None)})
    if allowed:
        if "GET" in allowed:
            allowed.append("HEAD")
        raise ApiError(f"{request.method} is not allowed on {request.path}", code="method_not_allowed",
                       status=405, headers=[("Allow", ", ".join(allowed))])
    raise NotFound(f"no such endpoint: {request.path}", code="no_such_endpoint")
