"""The OpenAPI 3.1 description of the lookup API, served at ``/openapi.json``.

Built from the config because the bounds of ``k`` are settings. Schemas are JSON
Schema 2020-12 (OpenAPI 3.1), so tests validate real responses against them.
"""
from __future__ import annotations

from lookup_server.admin import MAX_BODY_BYTES
from lookup_server.config import ServerConfig
from lookup_server.recommend import (
    CATEGORY_POPULAR, GLOBAL_POPULAR, PROFILE_SEGMENT, UNKNOWN_PRODUCT, UNKNOWN_USER,
)
from lookup_server.realtime import NEW_USER_RECENT_EVENTS, RECENT_NEIGHBOURS
from lookup_server.request_params import MAX_PRODUCT_ID, MAX_USER_ID

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1.0.0"
_JSON = "application/json"


def _ref(kind: str, name: str) -> dict:
    return {"$ref": f"#/components/{kind}/{name}"}


def _json_response(description: str, schema_name: str) -> dict:
    return {"description": description, "content": {_JSON: {"schema": _ref("schemas", schema_name)}}}


def openapi_document(config: ServerConfig) -> dict:
    user_id = {"type": "integer", "format": "int64", "minimum": 0, "maximum": MAX_USER_ID}
    product_id = {"type": "integer", "format": "int64", "minimum": 0, "maximum": MAX_PRODUCT_ID}
    items = {"type": "array", "maxItems": config.max_k, "items": _ref("schemas", "Item"),
             "description": "Best first; inactive products left out, so possibly fewer than k."}
    answer_fields = {
        "items": items,
        "algorithm": {"type": "string",
                      "description": "Algorithm whose list answered, popular_fallback, or recent_neighbours (a new user answered from their events since the snapshot)."},
        "snapshot_version": {"type": "string"},
        "request_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
    }
    answer_required = ["items", "algorithm", "fallback", "snapshot_version", "request_id"]
    recs_errors = {
        "400": _ref("responses", "BadRequest"),
        "503": _ref("responses", "NotReady"),
        "default": _ref("responses", "Error"),
    }
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "recsys lookup server",
            "version": API_VERSION,
            "description": "Top-k recommendations read from the published LMDB snapshot. "
                           "Unknown ids are answered from a fallback list, never with 404.",
        },
        "paths": {
            "/v1/users/{user_id}/recommendations": {"get": {
                "operationId": "userRecommendations",
                "summary": "Top-k products for a user",
                "parameters": [
                    {"name": "user_id", "in": "path", "required": True, "schema": user_id},
                    _ref("parameters", "K"),
                    {**_ref("parameters", "Algorithm"),
                     "description": "A recs/user/<algorithm> list of the snapshot; default: one of "
                                    f"{list(config.algorithm_preference)} with a row, chosen by the "
                                    "bandit or else the best in the nightly evaluation."},
                ],
                "responses": {"200": _json_response("Recommendations", "UserRecommendations"),
                              **recs_errors},
            }},
            "/v1/products/{product_id}/similar": {"get": {
                "operationId": "similarProducts",
                "summary": "Top-k products similar to a product",
                "parameters": [
                    {"name": "product_id", "in": "path", "required": True, "schema": product_id},
                    _ref("parameters", "K"),
                    {**_ref("parameters", "Algorithm"),
                     "description": "A recs/product/<algorithm> list of the snapshot; default: the "
                                    f"first of {list(config.similar_preference)} with a row."},
                ],
                "responses": {"200": _json_response("Similar products", "SimilarProducts"),
                              **recs_errors},
            }},
            "/healthz": {"get": {
                "operationId": "healthz",
                "summary": "Liveness: the process answers",
                "responses": {"200": _json_response("Alive", "Health")},
            }},
            "/readyz": {"get": {
                "operationId": "readyz",
                "summary": "Readiness: this worker serves a verified snapshot",
                "responses": {"200": _json_response("Ready", "Ready"),
                              "503": _json_response("No verified snapshot yet", "Error")},
            }},
            "/v1/admin/pin": {
                **{method: {
                    "operationId": f"{method}Pin",
                    "summary": summary,
                    "security": [{"bearer": []}],
                    **({"requestBody": {"required": True, "content": {_JSON: {"schema": {
                        "type": "object", "required": ["algorithm"],
                        "properties": {"algorithm": {"type": "string", "minLength": 1}}}}}}}
                       if method == "put" else {}),
                    "responses": {"200": _json_response("The pin now", "Pin"),
                                  "400": _ref("responses", "BadRequest"),
                                  "401": _json_response("No bearer token", "Error"),
                                  "403": _json_response("Wrong token, or admin disabled", "Error"),
                                  **({"413": _json_response(f"Body over {MAX_BODY_BYTES} bytes", "Error")}
                                     if method == "put" else {}),
                                  "503": _json_response("The delta store is unavailable", "Error"),
                                  "default": _ref("responses", "Error")},
                } for method, summary in (
                    ("get", "Which algorithm every answer is pinned to, if any"),
                    ("put", "Pin every answer to one algorithm (all replicas, within a second)"),
                    ("delete", "Unpin: the bandit chooses again"))},
            },
            "/openapi.json": {"get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1 document",
                                      "content": {_JSON: {"schema": {"type": "object"}}}}},
            }},
            "/metrics": {"get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics, summed over every worker",
                "description": "Latency per endpoint, answers by algorithm/fallback/degraded, hit "
                               "rate, delta failures, snapshot version and age, snapshots refused "
                               "by reason, and the shared bandit counts and CTR per (segment, "
                               "algorithm). Text exposition "
                               "format 0.0.4, or OpenMetrics when the Accept header asks for it.",
                "responses": {"200": {"description": "Metrics",
                                      "content": {"text/plain": {"schema": {"type": "string"}},
                                                  "application/openmetrics-text": {"schema": {"type": "string"}}}}},
            }},
            "/status": {"get": {
                "operationId": "status",
                "summary": "Status page for operators (HTML)",
                "description": "Snapshot in service, hit rate, fallbacks, delta health, latency "
                               "percentiles, and the algorithm mix and CTR over time as charts.",
                "responses": {"200": {"description": "Status page",
                                      "content": {"text/html": {"schema": {"type": "string"}}}}},
            }},
        },
        "components": {
            "parameters": {
                "K": {"name": "k", "in": "query", "required": False,
                      "schema": {"type": "integer", "minimum": 1, "maximum": config.max_k,
                                 "default": config.default_k}},
                "Algorithm": {"name": "algorithm", "in": "query", "required": False,
                              "schema": {"type": "string", "minLength": 1}},
            },
            "responses": {
                "BadRequest": _json_response("A parameter is malformed or out of bounds", "Error"),
                "NotReady": {
                    **_json_response("No verified snapshot is loaded yet", "Error"),
                    "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
                },
                "Error": _json_response("Any other error", "Error"),
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Pin": {
                    "type": "object", "required": ["pinned"], "additionalProperties": False,
                    "properties": {"pinned": {"type": ["string", "null"]}},
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "additionalProperties": False,
                    "properties": {"error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "additionalProperties": False,
                        "properties": {"code": {"type": "integer", "minimum": 400, "maximum": 599},
                                       "message": {"type": "string"}},
                    }},
                },
                "Item": {
                    "type": "object",
                    "required": ["product_id", "score"],
                    "additionalProperties": False,
                    "properties": {"product_id": product_id, "score": {
                        "type": "number",
                        "description": "higher ranks first; comparable within one answer only. Snapshot scores "
                                       "are stored with 11 significant bits (within 0.05 %)."}},
                },
                "UserRecommendations": {
                    "type": "object",
                    "required": ["user_id", *answer_required, "degraded", "realtime"],
                    "additionalProperties": False,
                    "properties": {
                        "user_id": user_id,
                        **answer_fields,
                        "fallback": {"enum": [None, NEW_USER_RECENT_EVENTS, PROFILE_SEGMENT, UNKNOWN_USER],
                                     "description": "null when the user's own list answered; "
                                                    f"{NEW_USER_RECENT_EVENTS}: a user without a list, "
                                                    "answered from neighbours of their events since the "
                                                    f"snapshot (algorithm {RECENT_NEIGHBOURS}); "
                                                    f"{PROFILE_SEGMENT}: a user with a profile but no list "
                                                    "or recent events, answered from the popular list of "
                                                    "the users who share their profile features; "
                                                    f"{UNKNOWN_USER}: the global popular list, fused with "
                                                    "what is trending now."},
                        "degraded": {"type": "boolean",
                                     "description": "true when the real-time delta could not be read: "
                                                    "the answer comes from the snapshot alone."},
                        "realtime": _ref("schemas", "RealtimeMerge"),
                    },
                },
                "RealtimeMerge": {
                    "type": "object",
                    "required": ["recent_events", "removed", "explored", "trending"],
                    "additionalProperties": False,
                    "description": "What the real-time delta changed in the snapshot's answer.",
                    "properties": {
                        "recent_events": {"type": "integer", "minimum": 0,
                                          "description": "The user's events since the snapshot's data cut-off."},
                        "removed": {"type": "integer", "minimum": 0,
                                    "description": "Products dropped: bought or deactivated since."},
                        "explored": {"type": "array", "items": product_id,
                                     "description": "New products given an exploration slot."},
                        "trending": {"type": "integer", "minimum": 0,
                                     "description": "Products of the answer that are trending now "
                                                    "(global fallback answers only)."},
                    },
                },
                "SimilarProducts": {
                    "type": "object",
                    "required": ["product_id", *answer_required, "degraded"],
                    "additionalProperties": False,
                    "properties": {
                        "product_id": product_id,
                        **answer_fields,
                        "degraded": {"type": "boolean",
                                     "description": "true when catalog changes since the snapshot "
                                                    "could not be read."},
                        "fallback": {
                            "enum": [None, CATEGORY_POPULAR, GLOBAL_POPULAR, UNKNOWN_PRODUCT],
                            "description": "null when the product's own list answered; "
                                           f"{CATEGORY_POPULAR}: its category's popular list; "
                                           f"{GLOBAL_POPULAR}: known product, category without list; "
                                           f"{UNKNOWN_PRODUCT}: product not in the catalogue.",
                        },
                    },
                },
                "Health": {
                    "type": "object",
                    "required": ["status"],
                    "properties": {"status": {"const": "ok"}},
                },
                "Ready": {
                    "type": "object",
                    "required": ["status", "snapshot_version", "snapshot_created_at", "loaded_at",
                                 "rejected_snapshots", "worker_pid"],
                    "additionalProperties": False,
                    "properties": {
                        "status": {"const": "ready"},
                        "snapshot_version": {"type": "string"},
                        "snapshot_created_at": {"type": "string"},
                        "loaded_at": {"type": "string", "format": "date-time"},
                        "rejected_snapshots": {"type": "integer", "minimum": 0,
                                               "description": "Versions this worker refused since start."},
                        "worker_pid": {"type": "integer"},
                    },
                },
            },
        },
    }
