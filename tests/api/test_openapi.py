"""The OpenAPI document is generated from the route table; these tests keep it in step with
what the router actually serves, and check it is a well-formed 3.1 document."""
import re

from fiberapp.api.mount import OWNER
from fiberapp.api.openapi import openapi_path


def test_every_routed_api_endpoint_is_documented_and_nothing_else(env):
    doc = env.ok("GET", "/api/v1/openapi.json")
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    routed = {(openapi_path(r.pattern), r.method) for r in env.router.routes()
              if r.owner == OWNER and r.method != "*"}
    assert documented == routed
    # and the contract is all there
    for path, method in [("/health", "GET"), ("/metrics", "GET"), ("/api/v1/openapi.json", "GET"),
                         ("/api/v1/fibers", "GET"), ("/api/v1/tubes", "GET"),
                         ("/api/v1/tubes/{tube}", "PUT"), ("/api/v1/tubes/{tube}", "GET"),
                         ("/api/v1/tubes/{tube}", "DELETE"), ("/api/v1/tubes/{tube}/truncate", "POST"),
                         ("/api/v1/tubes/{tube}/tasks", "POST"), ("/api/v1/tubes/{tube}/tasks", "GET"),
                         ("/api/v1/tubes/{tube}/tasks/{id}", "GET"), ("/api/v1/tubes/{tube}/tasks/{id}", "DELETE"),
                         ("/api/v1/tubes/{tube}/take", "POST"), ("/api/v1/take", "POST"),
                         ("/api/v1/tubes/{tube}/tasks/{id}/ack", "POST"),
                         ("/api/v1/tubes/{tube}/tasks/{id}/release", "POST"),
                         ("/api/v1/tubes/{tube}/tasks/{id}/bury", "POST"),
                         ("/api/v1/tubes/{tube}/tasks/{id}/touch", "POST"),
                         ("/api/v1/tubes/{tube}/kick", "POST"), ("/api/v1/snapshot", "POST")]:
        assert (path, method) in documented, (path, method)


def test_document_is_well_formed(env):
    doc = env.ok("GET", "/api/v1/openapi.json")
    assert doc["openapi"].startswith("3.1")
    schemas = doc["components"]["schemas"]
    for path, ops in doc["paths"].items():
        names = set(re.findall(r"{(\w+)}", path))
        for method, op in ops.items():
            declared = {p["name"] for p in op.get("parameters", ()) if p["in"] == "path"}
            assert declared == names, (path, method)
            assert op["responses"], (path, method)
            for status in op["responses"]:
                assert re.fullmatch(r"[1-5]\d\d", status)
            body = op.get("requestBody")
            if body:
                ref = body["content"]["application/json"]["schema"]["$ref"]
                assert ref.rsplit("/", 1)[1] in schemas
    # every $ref resolves
    text = str(doc)
    for ref in re.findall(r"#/components/schemas/(\w+)", text):
        assert ref in schemas, ref


def test_typed_path_params_are_typed_in_the_document(env):
    doc = env.ok("GET", "/api/v1/openapi.json")
    params = doc["paths"]["/api/v1/tubes/{tube}/tasks/{id}"]["get"]["parameters"]
    assert {p["name"]: p["schema"]["type"] for p in params} == {"tube": "string", "id": "integer"}
    take = doc["paths"]["/api/v1/tubes/{tube}/take"]["post"]
    assert "204" in take["responses"] and any(p["in"] == "header" for p in take["parameters"])
