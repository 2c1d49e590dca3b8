"""Handlers about the server itself: health, metrics, the OpenAPI document, fibers,
snapshots."""
from fiberapp.http.response import JSON, Response

from . import schemas
from .context import reply
from .errors import Unavailable


def health(api, req):
    """200 {"status": "ok"} when serving; 503 with the reason while recovering or draining.

    The health callable may answer a status string or (http status, body) as App.health()
    does; without one, health is derived from persistence and the store.
    """
    status = api.health() if api.health is not None else derived_health(api)
    if isinstance(status, tuple):
        code, body = status
        return reply(body, int(code))
    if status == "ok":
        return {"status": "ok"}
    return reply({"status": str(status)}, 503)


def derived_health(api):
    """Without a health callable: recovering (persistence) or draining (store) -> not ok."""
    if not api.has_store or getattr(api.persistence, "recovering", False):
        return "recovering"
    if getattr(api.store, "draining", False):
        return "draining"
    return "ok"


def metrics(api, req):
    from prometheus_client import exposition

    return Response(exposition.generate_latest(api.registry), 200, None, exposition.CONTENT_TYPE_LATEST)


def openapi(api, req):
    return Response(api.openapi_doc, 200, None, JSON)


def fibers(api, req):
    """Runtime.top(): every fiber with its CPU time, switches and CPU share (instant:
    the last window, average: a decaying mean), busiest first."""
    runtime = api.runtime
    if runtime is None:
        return {"fibers": []}
    return {"fibers": [dict(row) for row in runtime.top()]}


def snapshot(api, req):
    api.body(req, schemas.EMPTY)
    if api.persistence is None:
        raise Unavailable("persistence is off (wal_mode = none): there is nothing to snapshot",
                          code="persistence_off")
    api.store  # 503 while recovering
    result = api.persistence.snapshot()
    return {"lsn": result["lsn"], "file": result["file"]}
