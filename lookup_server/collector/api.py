"""HTTP routes of the collector. Every write follows the same order:

1. authenticate (before the body is read), parse and validate the whole batch;
   anything invalid -> 400 and nothing is written anywhere;
2. append the rows durably to the landing zone (fsync) -> 503 if that fails, and
   nothing is acknowledged;
3. hand them to the real-time delta store, best effort: its failure turns
   ``realtime`` false in the answer, never the status (the rows are already
   durable, so the client must not retry).
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone

from flask import Blueprint, request
from werkzeug.exceptions import ServiceUnavailable

from lookup_server.auth import require_token
from lookup_server.collector.parsing import (
    Event, ProductChange, batch_items, deactivation, parse_events, parse_product, parse_products,
    read_json, rewards_by_request,
)
from lookup_server.collector.openapi import openapi_document
from lookup_server.collector.state import collector_state
from lookup_server.errors import error_body
from lookup_server.request_params import parse_product_id

log = logging.getLogger(__name__)

blueprint = Blueprint("collector", __name__)


@blueprint.before_request
def authenticate():
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        require_token(collector_state().config.token)


@blueprint.get("/healthz")
def healthz():
    """Liveness only: says nothing about the landing zone or the delta store."""
    return {"status": "ok"}


@blueprint.get("/openapi.json")
def openapi_json():
    return openapi_document(collector_state().config)


@blueprint.post("/v1/events")
def post_events():
    state = collector_state()
    items = batch_items(read_json(), "events", state.config.max_batch, single_allowed=True)
    events = parse_events(items, _now())
    _land("events", [e.landing_row for e in events])
    realtime = state.delta.apply(
        "events", lambda store: _store_events(store, events, state.config.rewards)
    ) if events else state.delta.enabled
    return {"accepted": len(events), "realtime": realtime}, 202


@blueprint.put("/v1/products/<product_id>")
def put_product(product_id: str):
    pid = parse_product_id(product_id)
    change, reason = parse_product(read_json(), _now(), path_id=pid)
    if reason is not None:
        return error_body(400, reason), 400
    return _product_answer(change, _save_products([change]))


@blueprint.delete("/v1/products/<product_id>")
def delete_product(product_id: str):
    change = deactivation(parse_product_id(product_id), _now())
    return _product_answer(change, _save_products([change]))


@blueprint.post("/v1/products")
def post_products():
    state = collector_state()
    items = batch_items(read_json(), "products", state.config.max_batch, single_allowed=False)
    changes = parse_products(items, _now())
    realtime = _save_products(changes) if changes else state.delta.enabled
    return {"accepted": len(changes), "realtime": realtime}


# --- helpers ------------------------------------------------------------------------

def _now() -> datetime:
    return datetime.now(timezone.utc)


def _land(table: str, rows: list[dict]) -> None:
    """Append durably or answer 503 (nothing acknowledged, safe to retry)."""
    if not rows:
        return
    try:
        collector_state().writer(table).append(rows)
    except OSError as exc:
        log.error("landing write to %s failed: %s", table, exc)
        raise ServiceUnavailable(f"the landing zone is not writable; nothing was accepted ({table})",
                                 retry_after=1) from exc


def _store_events(store, events: list[Event], rewards: dict[str, float]) -> None:
    store.add_events([e.delta for e in events])
    for request_id, amount in rewards_by_request(events, rewards).items():
        store.reward(request_id, amount)


def _save_products(changes: list[ProductChange]) -> bool:
    """Land the rows, then apply them to the store; True if the store took them."""
    _land("products", [c.landing_row for c in changes])
    return collector_state().delta.apply(
        "catalog", lambda store: store.apply_catalog([c.change for c in changes]))


def _product_answer(change: ProductChange, realtime: bool) -> dict:
    return {"product_id": change.change.product_id, "active": change.change.active,
            "realtime": realtime}
