"""The OpenAPI 3.1 document, generated from the route table (routes.ROUTES).

Paths use OpenAPI's ``{name}`` form: the router's ``{id:int}`` becomes ``{id}`` with an
integer parameter schema. Request bodies and query parameters come from the same Schema
objects that validate requests, so the document states exactly what is enforced.
"""
import re

from . import schemas
from .sessions import HEADER as SESSION_HEADER

_PARAM = re.compile(r"{([A-Za-z_][A-Za-z0-9_]*)(?::([a-z]+))?}")
_TYPES = {"int": {"type": "integer"}, "float": {"type": "number"}, "str": {"type": "string"},
          "path": {"type": "string"}, "uuid": {"type": "string", "format": "uuid"}}

_REASONS = {400: "Bad request: bad JSON, a bad, unknown or missing field",
            401: "Missing or wrong API token",
            404: "No such tube or task",
            409: "Conflict: wrong state, another session's task, tube exists or busy",
            413: "Task or body too large",
            503: "Cannot log (disk full, I/O error) or draining"}

TASK_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "tube": {"type": "string"},
        "state": {"type": "string", "enum": list(schemas.STATES)},
        "data": {},
        "pri": {"type": "integer"},
        "ttl": {"type": ["number", "null"]},
        "ttr": {"type": ["number", "null"]},
        "delay": {"type": ["number", "null"]},
        "utube": {"type": ["string", "null"]},
        "key": {"type": ["string", "null"]},
        "attempts": {"type": "integer"},
        "created_at": {"type": "number", "description": "Wall-clock seconds since the epoch"},
    },
    "required": ["id", "tube", "state", "data"],
}


def openapi_path(pattern):
    return _PARAM.sub(lambda m: "{" + m.group(1) + "}", pattern)


def document(routes, title="fiberapp", version="1"):
    paths = {}
    for spec in routes:
        paths.setdefault(openapi_path(spec.path), {})[spec.method.lower()] = _operation(spec)
    return {
        "openapi": "3.1.0",
        "info": {"title": f"{title} HTTP API", "version": version,
                 "description": "Queues over HTTP. Durations are seconds, fractions allowed."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Task": TASK_SCHEMA,
                "TaskReply": {"type": "object", "properties": {"task": {"$ref": "#/components/schemas/Task"},
                                                               "existing": {"type": "boolean"}},
                              "required": ["task"]},
                "TasksReply": {"type": "object", "properties": {
                    "tasks": {"type": "array", "items": {"$ref": "#/components/schemas/Task"}}},
                    "required": ["tasks"]},
                "Tube": {"type": "object", "properties": {
                    "name": {"type": "string"}, "driver": {"type": "string"},
                    "options": {"type": "object"}, "stats": {"type": "object"}}},
                "Fiber": {"type": "object", "properties": {
                    "id": {"type": "integer"}, "name": {"type": "string"}, "status": {"type": "string"},
                    "cpu_time": {"type": "number"}, "switches": {"type": "integer"},
                    "instant": {"type": "number"}, "average": {"type": "number"}}},
                "Error": {"type": "object", "properties": {"error": {
                    "type": "object", "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                    "required": ["code", "message"]}}, "required": ["error"]},
                **{s.name: s.json_schema() for s in schemas.ALL},
            },
        },
    }


def _operation(spec):
    op = {"summary": spec.summary, "tags": [spec.tag],
          "operationId": f"{spec.method.lower()}_{spec.handler.__name__}"}
    params = []
    for m in _PARAM.finditer(spec.path):
        params.append({"name": m.group(1), "in": "path", "required": True,
                       "schema": _TYPES[m.group(2) or "str"]})
    if spec.query is not None:
        for name, field in spec.query.fields.items():
            params.append({"name": name, "in": "query", "required": field.required,
                           "schema": field.json_schema()})
    if spec.session:
        params.append({"name": SESSION_HEADER, "in": "header", "required": False,
                       "schema": {"type": "string", "maxLength": 128},
                       "description": "Consumer session; take returns a fresh one when absent"})
    if params:
        op["parameters"] = params
    if spec.body is not None:
        op["requestBody"] = {"required": False, "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{spec.body.name}"}}}}
    responses = {}
    for status, (description, schema) in spec.ok.items():
        resp = {"description": description}
        if schema is not None:
            resp["content"] = {spec.content_type: {"schema": schema}}
        if spec.session and status in (200, 204):
            resp["headers"] = {SESSION_HEADER: {"schema": {"type": "string"}}}
        responses[str(status)] = resp
    for status in spec.errors:
        if status == 401 and not spec.auth:
            continue
        responses[str(status)] = {"description": _REASONS[status], "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    op["responses"] = responses
    if spec.auth:
        op["security"] = [{"bearer": []}]
    else:
        op["security"] = []
    return op
