"""The route table: read it as the API's specification.

Each RouteSpec names the method, the path (router syntax, typed parameters), the handler,
the body and query schemas, and the answers it can give. install() registers every spec
on the router; openapi.document() turns the same table into OpenAPI 3.1, so the document
cannot describe a route that is not served or miss one that is.
"""
from dataclasses import dataclass, field

from . import schemas, system, tasks, tubes

TASK = {"$ref": "#/components/schemas/TaskReply"}
TASKS = {"$ref": "#/components/schemas/TasksReply"}


@dataclass(frozen=True)
class RouteSpec:
    method: str
    path: str
    handler: object
    summary: str
    tag: str = "tasks"
    body: object = None           # a schemas.Schema
    query: object = None          # a schemas.Schema (query string)
    ok: dict = field(default_factory=dict)  # status -> (description, JSON schema or None)
    errors: tuple = (400, 401, 404)
    auth: bool = True
    session: bool = False         # reads (and for take, sets) X-Fiberapp-Session
    content_type: str = "application/json"


def _obj(**props):
    return {"type": "object", "properties": props}


ROUTES = (
    # Hot task routes first: the router tries parameterised patterns in this order.
    RouteSpec("POST", "/api/v1/tubes/{tube}/tasks", tasks.put, "Put a task or a batch of tasks",
              body=schemas.PUT,
              ok={201: ("Created", {"oneOf": [TASK, TASKS]}),
                  200: ("A live task holds this key: that task, with existing: true", TASK)},
              errors=(400, 401, 404, 409, 413, 503)),
    RouteSpec("POST", "/api/v1/tubes/{tube}/take", tasks.take, "Take a task (long poll up to timeout)",
              body=schemas.TAKE, session=True,
              ok={200: ("Taken (tasks when count is given)", {"oneOf": [TASK, TASKS]}),
                  204: ("Nothing came within the timeout", None)},
              errors=(400, 401, 404, 503)),
    RouteSpec("POST", "/api/v1/tubes/{tube}/tasks/{id:int}/ack", tasks.ack, "Acknowledge: the task is done",
              body=schemas.EMPTY, session=True, ok={200: ("The task, done", TASK)},
              errors=(400, 401, 404, 409, 503)),
    RouteSpec("POST", "/api/v1/tubes/{tube}/tasks/{id:int}/release", tasks.release,
              "Return a taken task to ready (or delayed)", body=schemas.RELEASE, session=True,
              ok={200: ("The task", TASK)}, errors=(400, 401, 404, 409, 503)),
    RouteSpec("POST", "/api/v1/tubes/{tube}/tasks/{id:int}/touch", tasks.touch,
              "Extend a taken task's ttr", body=schemas.TOUCH, session=True,
              ok={200: ("The task", TASK)}, errors=(400, 401, 404, 409, 503)),
    RouteSpec("POST", "/api/v1/take", tasks.take_any, "Take from whichever tube has a task first",
              body=schemas.TAKE_ANY, session=True,
              ok={200: ("Taken", TASK), 204: ("Nothing came within the timeout", None)},
              errors=(400, 401, 404, 503)),
    RouteSpec("GET", "/api/v1/tubes/{tube}/tasks/{id:int}", tasks.peek, "Peek at a task",
              ok={200: ("The task", TASK)}),
    RouteSpec("DELETE", "/api/v1/tubes/{tube}/tasks/{id:int}", tasks.delete, "Delete a task",
              ok={200: ("The deleted task", TASK)}, errors=(400, 401, 404, 503)),
    RouteSpec("POST", "/api/v1/tubes/{tube}/tasks/{id:int}/bury", tasks.bury, "Bury a task",
              body=schemas.EMPTY, ok={200: ("The task", TASK)}, errors=(400, 401, 404, 409, 503)),
    RouteSpec("GET", "/api/v1/tubes/{tube}/tasks", tasks.list_tasks, "List tasks",
              query=schemas.LIST_QUERY, ok={200: ("Tasks, by id", TASKS)}),
    RouteSpec("GET", "/api/v1/tubes", tubes.list_tubes, "List tubes", tag="tubes",
              ok={200: ("Tubes", _obj(tubes={"type": "array", "items": {"$ref": "#/components/schemas/Tube"}}))},
              errors=(401,)),
    RouteSpec("PUT", "/api/v1/tubes/{tube}", tubes.put_tube, "Create a tube", tag="tubes",
              body=schemas.CREATE_TUBE,
              ok={201: ("Created", {"$ref": "#/components/schemas/Tube"}),
                  200: ("Exists already with this driver", {"$ref": "#/components/schemas/Tube"})},
              errors=(400, 401, 409, 503)),
    RouteSpec("GET", "/api/v1/tubes/{tube}", tubes.get_tube, "Describe a tube", tag="tubes",
              ok={200: ("The tube", {"$ref": "#/components/schemas/Tube"})}),
    RouteSpec("DELETE", "/api/v1/tubes/{tube}", tubes.delete_tube, "Drop a tube", tag="tubes",
              ok={204: ("Dropped", None)}, errors=(400, 401, 404, 409, 503)),
    RouteSpec("POST", "/api/v1/tubes/{tube}/truncate", tubes.truncate, "Delete every task of a tube",
              tag="tubes", body=schemas.EMPTY,
              ok={200: ("Deleted", _obj(deleted={"type": "integer"}))}, errors=(400, 401, 404, 503)),
    RouteSpec("POST", "/api/v1/tubes/{tube}/kick", tubes.kick, "Kick buried tasks back to ready",
              tag="tubes", body=schemas.KICK,
              ok={200: ("Kicked", _obj(kicked={"type": "integer"}))}, errors=(400, 401, 404, 503)),
    RouteSpec("GET", "/health", system.health, "Liveness and readiness", tag="system", auth=False,
              ok={200: ("Serving", _obj(status={"type": "string"})),
                  503: ("Recovering or draining", _obj(status={"type": "string"}))}, errors=()),
    RouteSpec("GET", "/metrics", system.metrics, "Prometheus metrics", tag="system", auth=False,
              ok={200: ("Prometheus text exposition format", None)}, errors=(),
              content_type="text/plain"),
    RouteSpec("GET", "/api/v1/openapi.json", system.openapi, "This document", tag="system",
              ok={200: ("OpenAPI 3.1", {"type": "object"})}, errors=(401,)),
    RouteSpec("GET", "/api/v1/fibers", system.fibers, "Fibers of the server", tag="system",
              ok={200: ("Fibers, busiest first", _obj(fibers={"type": "array", "items": {"$ref": "#/components/schemas/Fiber"}}))},
              errors=(401,)),
    RouteSpec("POST", "/api/v1/snapshot", system.snapshot, "Write a snapshot now", tag="system",
              body=schemas.EMPTY,
              ok={200: ("Snapshot written", _obj(lsn={"type": "integer"}, file={"type": "string"}))},
              errors=(400, 401, 409, 503)),
)
