"""The router's combined per-method matcher gives exactly what trying every route in order would give.

The reference below is the router's lookup before it had an index (static dict, then every
parameterised route in insertion order, first match of the method wins, HEAD falls back to
the first matching GET, otherwise 405 with the matching methods or 404). Random route
tables and paths are resolved both ways and must agree: the same route and params, or the
same error and Allow set."""
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fiberapp.http import MethodNotAllowed, NotFound, Router
from fiberapp.http.router import ANY, NO_PARAMS


def linear_resolve(router, method, path):
    by_method = router._static.get(path)
    if by_method is not None:
        route = by_method.get(method) or by_method.get(ANY)
        if route is None and method == "HEAD":
            route = by_method.get("GET")
        if route is not None:
            return route, NO_PARAMS
    allowed = set(by_method) if by_method else set()
    fallback = None
    for route in router._dynamic:
        params = route.match(path)
        if params is None:
            continue
        if route.method == method or route.method == ANY:
            return route, params
        if method == "HEAD" and route.method == "GET" and fallback is None:
            fallback = (route, params)
        allowed.add(route.method)
    if fallback is not None:
        return fallback
    if allowed:
        if "GET" in allowed:
            allowed.add("HEAD")
        raise MethodNotAllowed(allowed, "")
    raise NotFound("")


def outcome(fn, *args):
    try:
        route, params = fn(*args)
        return ("ok", route, dict(params))
    except MethodNotAllowed as exc:
        return ("405", exc.allow)
    except NotFound:
        return ("404",)


LITERALS = st.sampled_from(["a", "b", "taxi", "orders", "v1", ""])
PARAMS = st.sampled_from(["{x}", "{n:int}", "{f:float}", "{p:path}", "v{n:int}"])
METHODS = st.sampled_from(["GET", "POST", "PUT", "HEAD", ANY])
SEGMENTS = st.sampled_from(["a", "b", "taxi", "orders", "v1", "v7", "7", "-3", "1.5", "zz", ""])


@st.composite
def patterns(draw):
    segs = draw(st.lists(st.one_of(LITERALS, PARAMS), min_size=1, max_size=4))
    # a path parameter only at the end, each name once
    out, names = [], set()
    for i, seg in enumerate(segs):
        if "{p:path}" in seg and i != len(segs) - 1:
            seg = "p"
        for name in ("x", "n", "f", "p"):
            if "{" + name in seg:
                if name in names:
                    seg = name
                names.add(name)
        out.append(seg)
    return "/" + "/".join(out)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    table=st.lists(st.tuples(METHODS, patterns()), min_size=1, max_size=12),
    paths=st.lists(st.lists(SEGMENTS, min_size=0, max_size=5), min_size=1, max_size=12),
    removed=st.integers(0, 3),
)
def test_the_index_agrees_with_trying_every_route_in_order(table, paths, removed):
    router = Router()
    for i, (method, pattern) in enumerate(table):
        try:
            router.add(method, pattern, lambda req: None, owner=i % 4)
        except Exception:  # a duplicate (method, pattern): refused, as it should be
            pass
    if removed:
        router.remove_owner(removed)  # unmounting a script re-indexes
    for segs in paths:
        path = "/" + "/".join(segs)
        for method in ("GET", "POST", "HEAD", "DELETE"):
            assert outcome(router.resolve, method, path) == outcome(linear_resolve, router, method, path), (method, path)


def test_first_added_wins_across_prefixes_and_methods():
    r = Router()
    r.add("GET", "/{any}/x", lambda req: "wild")           # prefix "/"
    r.add("GET", "/taxi/{id}", lambda req: "taxi")          # prefix "/taxi/"
    r.add("POST", "/taxi/orders/{id:int}", lambda req: "p")
    r.add("GET", "/taxi/orders/{id:int}", lambda req: "g")
    assert r.resolve("GET", "/taxi/x")[0].pattern == "/{any}/x"  # added first, wider prefix
    assert r.resolve("GET", "/taxi/y")[0].pattern == "/taxi/{id}"
    assert r.resolve("GET", "/taxi/orders/5")[0].pattern == "/taxi/orders/{id:int}"
    assert r.resolve("HEAD", "/taxi/orders/5")[0].method == "GET"
    try:
        r.resolve("PUT", "/taxi/orders/5")
    except MethodNotAllowed as exc:
        assert exc.allow == ("GET", "HEAD", "POST")
    else:
        raise AssertionError("expected 405")


def test_client_paths_cannot_grow_the_candidate_cache():
    r = Router()
    r.add("GET", "/taxi/orders/{id:int}", lambda req: "g")
    for i in range(2000):
        try:
            r.resolve("GET", f"/taxi/unknown{i}/{i}")
        except NotFound:
            pass
    assert len(r._matchers) <= 1  # keyed by method only


def test_removing_an_owner_unindexes_its_routes():
    r = Router()
    r.add("GET", "/s/{id}", lambda req: "old", owner="script")
    assert r.resolve("GET", "/s/1")[0].owner == "script"
    r.remove_owner("script")
    try:
        r.resolve("GET", "/s/1")
    except NotFound:
        pass
    else:
        raise AssertionError("expected 404 after unmount")
    r.add("GET", "/s/{id}", lambda req: "new", owner="script2")
    assert r.resolve("GET", "/s/1")[0].owner == "script2"
