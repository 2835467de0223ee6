"""The OpenAPI 3.1 description of the collector, served at ``/openapi.json``.

Field rules come from ``schemas.tables`` (the same definitions the batch ingest
validates with), so the document cannot drift from what is accepted. Schemas are
JSON Schema 2020-12; tests validate real answers against them.
"""
from __future__ import annotations

from schemas.fields import Field, Table
from schemas.tables import EVENT_TYPES, EVENTS, PRODUCTS

from lookup_server.collector.config import CollectorConfig

_JSON = "application/json"
_JSON_TYPES = {"int64": "integer", "float64": "number", "float32": "number", "string": "string",
               "bool": "boolean", "map<string,string>": "object"}


def _ref(kind: str, name: str) -> dict:
    return {"$ref": f"#/components/{kind}/{name}"}


def _json(description: str, schema: dict) -> dict:
    return {"description": description, "content": {_JSON: {"schema": schema}}}


def _field_schema(f: Field) -> dict:
    if f.type == "timestamp":
        return {"type": ["string", "number"], "description": "ISO-8601 or Unix seconds. " + f.doc}
    schema: dict = {"type": _JSON_TYPES[f.type]}
    if f.type == "map<string,string>":
        schema["additionalProperties"] = {"type": "string"}
    if f.min is not None:
        schema["minimum"] = f.min
    if f.max is not None:
        schema["maximum"] = f.max
    if f.allowed:
        schema["enum"] = list(f.allowed)
    if f.non_empty:
        schema["minLength"] = 1
    if f.doc:
        schema["description"] = f.doc
    return schema


def _record_schema(table: Table, extra: dict | None = None, optional: tuple[str, ...] = ()) -> dict:
    required = [f.name for f in table.fields if f.required and f.required_unless is None and f.name not in optional]
    return {"type": "object", "required": required, "additionalProperties": False,
            "properties": {**{f.name: _field_schema(f) for f in table.fields}, **(extra or {})}}


def openapi_document(config: CollectorConfig) -> dict:
    event = _record_schema(EVENTS, optional=("timestamp",), extra={"request_id": {
        "type": "string", "maxLength": 64, "pattern": "^[A-Za-z0-9_-]+$",
        "description": "The request_id of the recommendation this event follows; a "
                       + ", ".join(sorted(config.rewards)) + " rewards the algorithm that served it, once."}})
    event["description"] = f"An event ({', '.join(EVENT_TYPES)}); timestamp defaults to the time received."
    product = _record_schema(PRODUCTS)
    product["description"] = "A catalog row; category is required unless active is false."
    # PUT names the product in its path: the body may repeat the id, not contradict it.
    product_put = _record_schema(PRODUCTS, optional=("product_id",))
    product_put["description"] = product["description"] + " product_id, if given, must be the path's."
    batch = {"type": "array", "minItems": 1, "maxItems": config.max_batch}
    errors = {"400": _ref("responses", "BadRequest"), "401": _ref("responses", "Unauthorized"),
              "403": _ref("responses", "Forbidden"), "413": _ref("responses", "TooLarge"),
              "503": _ref("responses", "Unavailable"), "default": _ref("responses", "Error")}
    product_id = {"name": "product_id", "in": "path", "required": True,
                  "schema": {"type": "integer", "minimum": 0, "maximum": PRODUCTS.field("product_id").max}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "recsys event collector", "version": "1.0.0",
                 "description": "Events and catalog changes, written durably to the landing zone before "
                                "the answer, then into the real-time delta. Every write needs a bearer token."},
        "security": [{"bearer": []}],
        "paths": {
            "/v1/events": {"post": {
                "operationId": "postEvents", "summary": "Record one event or a batch (all or nothing)",
                "requestBody": {"required": True, "content": {_JSON: {"schema": {"oneOf": [
                    _ref("schemas", "Event"), {**batch, "items": _ref("schemas", "Event")},
                    {"type": "object", "required": ["events"], "additionalProperties": False,
                     "properties": {"events": {**batch, "items": _ref("schemas", "Event")}}}]}}}},
                "responses": {"202": _json("Durable in the landing zone", _ref("schemas", "Accepted")), **errors},
            }},
            "/v1/products": {"post": {
                "operationId": "postProducts", "summary": "Upsert a batch of catalog rows (all or nothing)",
                "requestBody": {"required": True, "content": {_JSON: {"schema": {"oneOf": [
                    {**batch, "items": _ref("schemas", "Product")},
                    {"type": "object", "required": ["products"], "additionalProperties": False,
                     "properties": {"products": {**batch, "items": _ref("schemas", "Product")}}}]}}}},
                "responses": {"200": _json("Durable in the landing zone", _ref("schemas", "Accepted")), **errors},
            }},
            "/v1/products/{product_id}": {
                "put": {"operationId": "putProduct", "summary": "Upsert one product",
                        "parameters": [product_id],
                        "requestBody": {"required": True, "content": {_JSON: {"schema": _ref("schemas", "ProductPut")}}},
                        "responses": {"200": _json("Durable", _ref("schemas", "ProductChanged")), **errors}},
                "delete": {"operationId": "deleteProduct", "summary": "Deactivate a product",
                           "parameters": [product_id],
                           "responses": {"200": _json("Durable", _ref("schemas", "ProductChanged")), **errors}},
            },
            "/healthz": {"get": {"operationId": "healthz", "summary": "Liveness", "security": [],
                                 "responses": {"200": _json("Alive", {"type": "object"})}}},
            "/openapi.json": {"get": {"operationId": "openapi", "summary": "This document", "security": [],
                                      "responses": {"200": _json("OpenAPI 3.1", {"type": "object"})}}},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {
                "BadRequest": _json("Malformed or invalid input; nothing was written", _ref("schemas", "Error")),
                "Unauthorized": _json("No bearer token", _ref("schemas", "Error")),
                "Forbidden": _json("Wrong bearer token", _ref("schemas", "Error")),
                "TooLarge": _json(f"Body over {config.max_body_bytes} bytes or batch over {config.max_batch}",
                                  _ref("schemas", "Error")),
                "Unavailable": _json("The landing zone is not writable; nothing was accepted, retry",
                                     _ref("schemas", "Error")),
                "Error": _json("Any other error", _ref("schemas", "Error")),
            },
            "schemas": {
                "Event": event,
                "Product": product,
                "ProductPut": product_put,
                "Accepted": {"type": "object", "required": ["accepted", "realtime"], "additionalProperties": False,
                             "properties": {"accepted": {"type": "integer", "minimum": 0},
                                            "realtime": {"type": "boolean", "description":
                                                         "false: durable, but not in the real-time delta "
                                                         "until the next snapshot (do not retry)"}}},
                "ProductChanged": {"type": "object", "required": ["product_id", "active", "realtime"],
                                   "additionalProperties": False,
                                   "properties": {"product_id": {"type": "integer"}, "active": {"type": "boolean"},
                                                  "realtime": {"type": "boolean"}}},
                "Error": {"type": "object", "required": ["error"],
                          "properties": {"error": {"type": "object", "required": ["code", "message"],
                                                   "properties": {"code": {"type": "integer"},
                                                                  "message": {"type": "string"}}},
                                         "errors": {"type": "array", "items": {
                                             "type": "object", "required": ["index", "reason"],
                                             "properties": {"index": {"type": "integer"},
                                                            "reason": {"type": "string"}}}}}},
            },
        },
    }
