"""mount._wrap passes a route's path parameters positionally when the handler takes them
in the path's order (every API route does), and as keywords otherwise."""
from fiberapp.api.mount import _positional
from fiberapp.api.routes import ROUTES, RouteSpec


def _spec(path, handler):
    return RouteSpec("GET", path, handler, "test")


def test_every_api_route_is_called_positionally():
    for spec in ROUTES:
        assert _positional(spec, spec.handler) is not None, spec.path


def test_names_in_path_order():
    def h(api, req, tube, id):
        pass

    assert _positional(_spec("/t/{tube}/x/{id:int}", h), h) == ("tube", "id")


def test_other_order_or_shape_falls_back_to_keywords():
    def swapped(api, req, id, tube):
        pass

    def kw_only(api, req, *, tube):
        pass

    def extra_required(api, req, tube, more):
        pass

    def kwargs(api, req, **params):
        pass

    for h in (swapped, kw_only, extra_required, kwargs):
        assert _positional(_spec("/t/{tube}/x/{id:int}" if h is swapped else "/t/{tube}", h), h) is None, h


def test_extra_parameters_with_defaults_are_fine():
    def h(api, req, tube, limit=10, **rest):
        pass

    assert _positional(_spec("/t/{tube}", h), h) == ("tube",)


def test_wrapped_handlers_receive_the_same_arguments():
    from fiberapp.api import mount
    from fiberapp.http.request import Request

    seen = []

    def positional(api, req, tube, id):
        seen.append((tube, id))
        return {}

    class Token:
        enabled = False

    class Api:
        token = Token()

    for path in ("/t/{tube}/x/{id:int}",):
        call = mount._wrap(Api(), RouteSpec("GET", path, positional, "test"))
        req = Request("GET", "/t/a/x/3")
        req.params = {"tube": "a", "id": 3}
        call(req)
    assert seen == [("a", 3)]
