"""Router: method + path pattern -> handler, with typed parameters, middleware and owners.

    router = Router()

    @router.get("/api/v1/tubes/{tube}/tasks/{id:int}")
    def get_task(request):
        return {"tube": request.params["tube"], "id": request.params["id"]}

Patterns: literal segments and ``{name}`` / ``{name:type}`` parameters. Types: ``str``
(default: one segment, no "/"), ``int``, ``float``, ``uuid`` and ``path`` (the rest of the
path, "/" included; last only). A value that does not convert means "no match" (so
``/tasks/abc`` against ``{id:int}`` is a 404, not a 500).

No route for the path -> 404; a route for the path but not the method -> 405 with Allow.
HEAD falls back to the GET route (the server drops the body). Middleware are decorators
(``handler -> handler``) applied once when the route is added, never per request. Every
route may carry an ``owner`` tag; ``remove_owner(tag)`` drops all of an owner's routes
(a fiber script's routes, when the script is reloaded). Adding a route whose method and
pattern are already taken raises RouteError: scripts cannot silently shadow each other.

Lookup: a static path is one dict lookup. Parameterised routes are matched per method by
one combined regular expression (each route's pattern an alternative, in the order the
routes were added, plus the ``*`` routes), so the regex engine, in C, finds the first route
that matches the whole path exactly as trying every route in turn would; the alternative
that matched names the route. The combined expressions are built on first use per method
(the parser's method list bounds them) and dropped when a route is added or removed. A
value that does not convert (``{id:int}`` is checked by its regex; a converter that still
refuses) sends that request down the route-by-route path. Only a request that ends in
404/405 tries the other methods (to fill Allow).

dispatch(request) always returns a Response: HTTPError and anything registered in the
ErrorMap become their status with a JSON body; any other exception is a bug in a handler,
logged with its traceback and answered with 500 (that request only).
"""
import logging
import re
import uuid
from types import MappingProxyType

from .errors import ErrorMap, HTTPError, MethodNotAllowed, NotFound, RouteError
from .response import Response, error_response, to_response

log = logging.getLogger("fiberapp.http")

ANY = "*"
NO_PARAMS = MappingProxyType({})  # shared by every request to a route without parameters

_CONVERTERS = {
    "str": (r"[^/]+", str),
    "int": (r"-?[0-9]+", int),
    "float": (r"-?[0-9]+(?:\.[0-9]+)?", float),
    "uuid": (r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}", uuid.UUID),
    "path": (r".+", str),
}
_PARAM = re.compile(r"{([A-Za-z_][A-Za-z0-9_]*)(?::([a-z]+))?}")


class Route:
    """One (method, pattern) -> handler binding. ``call`` is the middleware-wrapped handler."""

    __slots__ = ("method", "pattern", "handler", "call", "owner", "name", "static", "names",
                 "source", "_regex", "_convert")

    def __init__(self, method, pattern, handler, middleware=(), owner=None, name=None):
        self.method = method
        self.pattern = pattern
        self.handler = handler
        self.owner = owner
        self.name = name or pattern
        call = handler
        # The innermost decorator is the one listed last, as if stacked with @ above the
        # function in the same order.
        for mw in reversed(tuple(middleware)):
            call = mw(call)
        self.call = call
        self.static, self._regex, self._convert, self.names, self.source = _compile(pattern)

    def match(self, path):
        """Dict of converted params, or None."""
        m = self._regex.fullmatch(path)
        if m is None:
            return None
        params = m.groupdict()
        for name, conv in self._convert:
            try:
                params[name] = conv(params[name])
            except ValueError:
                return None
        return params

    def __repr__(self):
        return f"<Route {self.method} {self.pattern} owner={self.owner!r}>"


def _compile(pattern):
    """(is_static, regex, converters, names, source) for a pattern: converters only for
    non-str types; names in order; source is the regex with plain (unnamed) groups, one per
    parameter, for the router's combined expressions."""
    if not pattern.startswith("/"):
        raise RouteError(f"route pattern {pattern!r} must start with '/'")
    regex, plain, convert, names, pos = [], [], [], [], 0
    for m in _PARAM.finditer(pattern):
        _literal(pattern, pattern[pos:m.start()], regex)
        _literal(pattern, pattern[pos:m.start()], plain)
        name, typ = m.group(1), m.group(2) or "str"
        if typ not in _CONVERTERS:
            raise RouteError(f"unknown parameter type {typ!r} in {pattern!r} (known: {', '.join(_CONVERTERS)})")
        if name in names:
            raise RouteError(f"parameter {name!r} appears twice in {pattern!r}")
        if typ == "path" and m.end() != len(pattern):
            raise RouteError(f"a path parameter must come last in {pattern!r}")
        names.append(name)
        expr, conv = _CONVERTERS[typ]
        regex.append(f"(?P<{name}>{expr})")
        plain.append(f"({expr})")
        if conv is not str:
            convert.append((name, conv))
        pos = m.end()
    _literal(pattern, pattern[pos:], regex)
    _literal(pattern, pattern[pos:], plain)
    if not names:
        return True, None, (), (), None
    return False, re.compile("".join(regex)), tuple(convert), tuple(names), "".join(plain)


class _Matcher:
    """The parameterised routes of one method (and ``*``), in insertion order, as one
    regex: alternative i is route i's pattern in a group of its own. A group closes after
    the groups inside it, so ``lastindex`` is the outer group of the route that matched."""

    __slots__ = ("routes", "_regex", "_table")

    def __init__(self, routes):
        self.routes = routes
        sources, table, group = [], {}, 1
        for route in routes:
            sources.append(f"({route.source})")
            table[group] = (route, group, group + 1 + len(route.names))
            group += 1 + len(route.names)
        self._regex = re.compile("|".join(sources)) if routes else None
        self._table = table

    def match(self, path):
        """(route, params) of the first route that matches path, or None."""
        if self._regex is None:
            return None
        m = self._regex.fullmatch(path)
        if m is None:
            return None
        route, first, end = self._table[m.lastindex]
        params = dict(zip(route.names, m.groups()[first:end - 1]))
        for name, conv in route._convert:
            try:
                params[name] = conv(params[name])
            except ValueError:  # the regex let it through, the converter did not
                return self._slow(path)
        return route, params

    def _slow(self, path):
        for route in self.routes:
            params = route.match(path)
            if params is not None:
                return route, params
        return None


def _literal(pattern, text, out):
    if "{" in text or "}" in text:
        raise RouteError(f"malformed parameter in route pattern {pattern!r}")
    out.append(re.escape(text))


class Router:
    """The route table. ``middleware`` here is applied to every route added afterwards."""

    def __init__(self, middleware=(), errors=None):
        self.errors = errors if errors is not None else ErrorMap()
        self._middleware = list(middleware)
        self._static = {}   # path -> {method: Route}
        self._dynamic = []  # [(Route)], in insertion order; first match wins per method
        self._routes = []
        self._matchers = {}     # method -> _Matcher of its dynamic routes; see resolve()

    # -- building the table -------------------------------------------------------
    def use(self, middleware):
        """Apply middleware to every route added from now on."""
        self._middleware.append(middleware)

    def add(self, method, pattern, handler, *, middleware=(), owner=None, name=None):
        methods = [method] if isinstance(method, str) else list(method)
        added = []
        for meth in methods:
            meth = meth.upper()
            if self._find_exact(meth, pattern) is not None:
                for r in added:
                    self._remove(r)
                raise RouteError(f"route {meth} {pattern} already exists")
            route = Route(meth, pattern, handler, [*self._middleware, *middleware], owner, name)
            self._routes.append(route)
            if route.static:
                self._static.setdefault(pattern, {})[meth] = route
            else:
                self._dynamic.append(route)
                self._reindex()
            added.append(route)
        return added[0] if len(added) == 1 else added

    def route(self, pattern, methods=("GET",), **options):
        """Decorator form of add()."""
        def decorate(fn):
            self.add(methods, pattern, fn, **options)
            return fn
        return decorate

    def get(self, pattern, **options):
        return self.route(pattern, ("GET",), **options)

    def post(self, pattern, **options):
        return self.route(pattern, ("POST",), **options)

    def put(self, pattern, **options):
        return self.route(pattern, ("PUT",), **options)

    def patch(self, pattern, **options):
        return self.route(pattern, ("PATCH",), **options)

    def delete(self, pattern, **options):
        return self.route(pattern, ("DELETE",), **options)

    def mount(self, prefix, wsgi_app, *, owner=None, **environ_options):
        """Serve a WSGI application (Flask, Django, ...) under prefix, every method."""
        from .wsgi import WSGIHandler

        prefix = prefix.rstrip("/")
        handler = WSGIHandler(wsgi_app, prefix, **environ_options)
        self.add(ANY, (prefix or "") + "/{wsgi_path:path}", handler, owner=owner, name=prefix + "/*")
        if prefix:
            self.add(ANY, prefix, handler, owner=owner, name=prefix + "/*")
        return handler

    def remove_owner(self, owner):
        """Remove every route added with this owner tag; returns how many were removed."""
        doomed = [r for r in self._routes if r.owner == owner]
        for r in doomed:
            self._remove(r)
        return len(doomed)

    def routes(self):
        return list(self._routes)

    def _find_exact(self, method, pattern):
        for r in self._routes:
            if r.method == method and r.pattern == pattern:
                return r
        return None

    def _remove(self, route):
        self._routes.remove(route)
        if route.static:
            by_method = self._static[route.pattern]
            del by_method[route.method]
            if not by_method:
                del self._static[route.pattern]
        else:
            self._dynamic.remove(route)
            self._reindex()

    def _reindex(self):
        self._matchers = {}

    def _matcher(self, method):
        found = self._matchers.get(method)
        if found is None:
            found = _Matcher(tuple(r for r in self._dynamic if r.method == method or r.method == ANY))
            if len(self._matchers) < 64:  # the parser's method list bounds it; a cap anyway
                self._matchers[method] = found
        return found

    # -- lookup and dispatch ----------------------------------------------------------
    def resolve(self, method, path):
        """(route, params) for the request, or raise NotFound / MethodNotAllowed."""
        by_method = self._static.get(path)
        if by_method is not None:
            route = by_method.get(method) or by_method.get(ANY)
            if route is None and method == "HEAD":
                route = by_method.get("GET")
            if route is not None:
                return route, NO_PARAMS
        if self._dynamic:
            found = self._matcher(method).match(path)
            if found is None and method == "HEAD":  # no HEAD or * route: the first GET route
                found = self._matcher("GET").match(path)
            if found is not None:
                return found
        # 404 or 405: which methods would have matched (the slow path, every method)
        allowed = set(by_method) if by_method else set()
        for other in {r.method for r in self._dynamic} - allowed:
            if other != ANY and self._matcher(other).match(path) is not None:
                allowed.add(other)
        if allowed:
            if "GET" in allowed:
                allowed.add("HEAD")
            raise MethodNotAllowed(allowed, f"{method} is not allowed on {path}")
        raise NotFound(f"no route for {path}")

    def dispatch(self, request):
        """Route and run the request. Always returns a Response (errors mapped, see above)."""
        try:
            # A static route for this very method: resolve()'s first case, inline (one
            # Python call and a tuple less per request); anything else goes through it.
            by_method = self._static.get(request.path)
            route = by_method.get(request.method) if by_method is not None else None
            if route is not None:
                request.route = route
                request.params = NO_PARAMS
            else:
                route, params = self.resolve(request.method, request.path)
                request.route = route
                request.params = params
            result = route.call(request)
            return result if result.__class__ is Response else to_response(result)
        except HTTPError as exc:
            return error_response(exc.status, exc.code, exc.message, exc.headers)
        except Exception as exc:
            mapped = self.errors.lookup(exc)
            if mapped is not None:
                return error_response(mapped[0], mapped[1], str(exc) or mapped[1])
            log.exception("handler for %s %s raised", request.method, request.path)
            return error_response(500, "internal_error", "internal server error")

    __call__ = dispatch
