"""Checking a real answer against the OpenAPI document that describes it.

Shared by the description tests (tests/test_lookup_openapi.py) and the fuzz tests
(tests/test_fuzz_openapi.py); works for the lookup server's and the collector's
documents alike, since both use JSON Schema 2020-12 and only local ``$ref``s.
"""
from __future__ import annotations

from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

SPEC_URI = "urn:openapi-under-test"


def resolve(spec: dict, ref: str):
    assert ref.startswith("#/"), f"only local refs expected, got {ref}"
    node = spec
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def check_against_spec(spec: dict, path: str, method: str, response) -> None:
    """Validate a real response against what the spec gives for its status (or, when
    the operation lists no such status, its ``default``); a status the spec has
    neither for fails."""
    responses = spec["paths"][path][method]["responses"]
    status = str(response.status_code)
    if status not in responses and "default" in responses:
        status = "default"
    assert status in responses, f"{method.upper()} {path} answered {status}, not in the spec"
    pointer = f"#/paths/{path.replace('~', '~0').replace('/', '~1')}/{method}/responses/{status}"
    described = responses[status]
    if "$ref" in described:
        pointer, described = described["$ref"], resolve(spec, described["$ref"])
    media_type = response.mimetype
    assert media_type in described["content"], \
        f"{method.upper()} {path} answered {status} as {media_type}, the spec says {sorted(described['content'])}"
    if media_type != "application/json":
        return  # text/plain metrics and the HTML status page have nothing to validate
    registry = Registry().with_resource(SPEC_URI, DRAFT202012.create_resource(spec))
    schema = {"$ref": f"{SPEC_URI}{pointer}/content/application~1json/schema"}
    Draft202012Validator(schema, registry=registry).validate(response.get_json())
