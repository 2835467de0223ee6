"""/openapi.json describes every route, and real answers match its schemas."""
from __future__ import annotations

import re

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from lookup_server import app_state

from tests.openapi_checks import SPEC_URI, check_against_spec, resolve

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


@pytest.fixture
def spec(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def _openapi_path(rule: str) -> str:
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def _refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_spec_structure(spec):
    """Top-level OpenAPI 3.1 keys are there and every operation lists responses."""
    assert spec["openapi"].startswith("3.1.")
    assert spec["info"]["title"] and spec["info"]["version"]
    assert spec["paths"]
    for path, item in spec["paths"].items():
        assert path.startswith("/")
        for method, operation in item.items():
            assert method in HTTP_METHODS
            assert operation["responses"], f"{method} {path} has no responses"


def test_every_ref_resolves(spec):
    """Each $ref points at something in the document."""
    refs = set(_refs(spec))
    assert refs  # the document does use components
    for ref in refs:
        assert resolve(spec, ref) is not None


def test_component_schemas_are_valid_json_schema(spec):
    """Every schema in components is itself valid JSON Schema 2020-12."""
    for name, schema in spec["components"]["schemas"].items():
        Draft202012Validator.check_schema(schema)


def test_every_route_is_described(app, spec):
    """Each Flask route (but static) appears in the spec with each of its methods."""
    rules = [r for r in app.url_map.iter_rules() if r.endpoint != "static"]
    assert len(rules) >= 5
    for rule in rules:
        path = _openapi_path(rule.rule)
        assert path in spec["paths"], f"{rule.rule} missing from the spec"
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert method.lower() in spec["paths"][path], f"{method} {path} missing"


def test_k_bounds_follow_config(app, spec):
    """The k parameter's bounds and default are the configured ones."""
    config = app_state(app).config
    k = spec["components"]["parameters"]["K"]["schema"]
    assert (k["minimum"], k["maximum"], k["default"]) == (1, config.max_k, config.default_k)


@pytest.mark.parametrize("url, path", [
    ("/v1/users/1/recommendations?k=3", "/v1/users/{user_id}/recommendations"),
    ("/v1/users/5555/recommendations", "/v1/users/{user_id}/recommendations"),
    ("/v1/users/1/recommendations?k=0", "/v1/users/{user_id}/recommendations"),
    ("/v1/users/x/recommendations", "/v1/users/{user_id}/recommendations"),
    ("/v1/users/1/recommendations?algorithm=zzz", "/v1/users/{user_id}/recommendations"),
    ("/v1/products/10/similar", "/v1/products/{product_id}/similar"),
    ("/v1/products/11/similar", "/v1/products/{product_id}/similar"),
    ("/v1/products/40/similar", "/v1/products/{product_id}/similar"),
    ("/v1/products/777/similar?k=1", "/v1/products/{product_id}/similar"),
    ("/v1/products/-5/similar", "/v1/products/{product_id}/similar"),
    ("/healthz", "/healthz"),
    ("/readyz", "/readyz"),
])
def test_real_responses_match_spec(client, spec, url, path):
    """200 and 400 answers validate against the spec's schema for their status."""
    check_against_spec(spec, path, "get", client.get(url))


def test_503_responses_match_spec(make_app):
    """Answers without a snapshot validate against the 503 schemas."""
    client = make_app().test_client()
    spec = client.get("/openapi.json").get_json()
    for url, path in [("/readyz", "/readyz"),
                      ("/v1/users/1/recommendations", "/v1/users/{user_id}/recommendations"),
                      ("/v1/products/1/similar", "/v1/products/{product_id}/similar")]:
        response = client.get(url)
        assert response.status_code == 503
        check_against_spec(spec, path, "get", response)


def test_validation_catches_a_wrong_answer(client, spec):
    """The schemas are strict enough to reject a malformed answer."""
    from jsonschema import ValidationError

    registry = Registry().with_resource(SPEC_URI, DRAFT202012.create_resource(spec))
    validator = Draft202012Validator({"$ref": f"{SPEC_URI}#/components/schemas/UserRecommendations"},
                                     registry=registry)
    good = client.get("/v1/users/1/recommendations").get_json()
    validator.validate(good)
    with pytest.raises(ValidationError):
        validator.validate({**good, "fallback": "made_up"})
    with pytest.raises(ValidationError):
        validator.validate({**good, "items": [{"product_id": -1, "score": 1.0}]})
