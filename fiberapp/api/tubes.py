"""Handlers for tubes: list, create, describe, drop, truncate, kick.

Each is a plain function (api, request, **path params) -> Response | dict. Store errors
(QueueError) pass through untouched; the route wrapper maps them to statuses.
"""
from . import schemas
from .context import reply
from .errors import ApiError, InvalidField

# Tube options that are Python-only (callables): never from the wire.
_LOCAL_OPTIONS = ("on_task_change",)


def tube_info(tube):
    stats = tube.statistics()
    return {"name": tube.name, "driver": tube.driver_name, "options": dict(tube.options),
            "stats": {"tasks": stats["tasks"], "calls": stats["calls"],
                      "paused": stats.get("paused", False), "waiting": stats.get("waiting", 0)}}


def list_tubes(api, req):
    store = api.store
    return {"tubes": [tube_info(store.tube(name)) for name in store.tubes()]}


def put_tube(api, req, tube):
    body = api.body(req, schemas.CREATE_TUBE)
    driver, options = body["driver"], body.get("options") or {}
    for name in _LOCAL_OPTIONS:
        if name in options:
            raise InvalidField(f"options.{name}", "is set from Python (fiber scripts), not over HTTP")
    store = api.store
    if tube in store.tubes():
        return _exists(store.tube(tube), driver)
    return reply(tube_info(store.create_tube(tube, driver, **options)), 201)


def get_tube(api, req, tube):
    return tube_info(api.store.tube(tube))


def delete_tube(api, req, tube):
    api.store.drop_tube(tube)  # NoSuchTube 404 first, then TubeBusy 409
    return None


def truncate(api, req, tube):
    api.body(req, schemas.EMPTY)
    t = api.store.tube(tube)
    live = t.statistics()["tasks"]["total"]
    t.truncate()  # one op, never yields between the count and the change
    return {"deleted": live}


def kick(api, req, tube):
    body = api.body(req, schemas.KICK)
    return {"kicked": api.store.tube(tube).kick(body["count"])}


def _exists(tube, driver):
    if tube.driver_name != driver:
        raise ApiError(f"tube {tube.name!r} exists with driver {tube.driver_name!r}, not {driver!r}",
                       code="tube_exists", status=409)
    return reply(tube_info(tube), 200)
