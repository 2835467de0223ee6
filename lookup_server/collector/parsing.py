"""Request bodies -> validated landing rows and real-time store records.

Validation is the contract's own (``schemas.validate_record`` on ``EVENTS`` /
``PRODUCTS``), so the collector refuses exactly what the batch ingest would
quarantine, at the door, while the client can still fix it. On top of the
contract the collector refuses unknown fields (a misspelt ``timestmap`` would
otherwise be silently replaced by the arrival time) and checks ``request_id``.

Batches are all-or-nothing: every item is checked, and any failure raises
``InvalidBatch`` listing up to ``MAX_REPORTED_ERRORS`` ``{"index", "reason"}``.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, TypeVar

from flask import abort
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge

from schemas import EVENTS, PRODUCTS, Table, validate_record

from lookup_server.delta import CatalogChange, DeltaEvent
from lookup_server.request_body import read_body

T = TypeVar("T")

MAX_REPORTED_ERRORS = 50
REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
EVENT_KEYS = frozenset(EVENTS.names) | {"request_id"}
PRODUCT_KEYS = frozenset(PRODUCTS.names)


class InvalidBatch(BadRequest):
    """400 whose body also lists ``errors``: ``[{"index": i, "reason": "..."}]``."""

    def __init__(self, what: str, total: int, errors: list[dict]) -> None:
        noun = what if total == 1 else f"{what}s"
        super().__init__(f"{len(errors)} of {total} {noun} invalid; nothing was accepted")
        self.errors = errors[:MAX_REPORTED_ERRORS]


@dataclass(frozen=True)
class Event:
    landing_row: dict        # exactly the EVENTS fields, timestamp as ISO-8601 UTC
    delta: DeltaEvent
    request_id: str | None


@dataclass(frozen=True)
class ProductChange:
    landing_row: dict        # the PRODUCTS fields that were given
    change: CatalogChange


# --- the body ---------------------------------------------------------------------

def read_json() -> Any:
    """The request body as JSON, whatever the Content-Type; 400 if it is not JSON,
    413 beyond MAX_CONTENT_LENGTH, streamed or not."""
    data = read_body()
    try:
        return json.loads(data, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        abort(400, f"body is not valid JSON: {str(exc)[:200]}")


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def batch_items(body: Any, key: str, max_batch: int, single_allowed: bool) -> list:
    """The items of a batch body: a JSON array, ``{key: [...]}``, or (if
    ``single_allowed``) one object standing for a batch of one."""
    if isinstance(body, dict) and key in body:
        extra = sorted(set(body) - {key})
        if extra:
            abort(400, f"unknown top-level field {extra[0]!r}: send {{{key!r}: [...]}}")
        items = body[key]
        if not isinstance(items, list):
            abort(400, f"{key!r} must be a JSON array")
    elif isinstance(body, list):
        items = body
    elif isinstance(body, dict) and single_allowed:
        items = [body]
    else:
        allowed = "an object, " if single_allowed else ""
        abort(400, f"body must be {allowed}a JSON array or {{{key!r}: [...]}}")
    if len(items) > max_batch:
        raise RequestEntityTooLarge(f"at most {max_batch} {key} per request, got {len(items)}")
    return items


# --- events -------------------------------------------------------------------------

def parse_events(items: list, now: datetime) -> list[Event]:
    """Validate every item against EVENTS (``now`` stamps a missing timestamp and
    bounds future ones); all valid or InvalidBatch."""
    return _all_or_nothing("event", items, lambda item: _parse_event(item, now))


def _all_or_nothing(kind: str, items: list, parse: Callable[[Any], tuple[T | None, str | None]]) -> list[T]:
    """``parse`` of every item, or InvalidBatch naming each refused index and why."""
    parsed, errors = [], []
    for index, item in enumerate(items):
        value, reason = parse(item)
        if reason is not None:
            errors.append({"index": index, "reason": reason})
        else:
            parsed.append(value)
    if errors:
        raise InvalidBatch(kind, len(items), errors)
    return parsed


def _parse_event(item: Any, now: datetime) -> tuple[Event | None, str | None]:
    if not isinstance(item, dict):
        return None, "not a JSON object"
    unknown = _unknown_field(item, EVENT_KEYS)
    if unknown:
        return None, unknown
    request_id = item.get("request_id")
    if request_id is not None and not (isinstance(request_id, str) and REQUEST_ID.fullmatch(request_id)):
        return None, "request_id: expected 1 to 64 characters of A-Z a-z 0-9 _ -"
    record = {k: v for k, v in item.items() if k != "request_id"}
    if record.get("timestamp") is None:
        record["timestamp"] = now.isoformat()
    typed, reason = validate_record(EVENTS, record, as_of=now)
    if reason is not None:
        return None, reason
    when: datetime = typed["timestamp"].astimezone(timezone.utc)
    row = {f: typed[f] for f in EVENTS.names}
    row["timestamp"] = when.isoformat()
    delta = DeltaEvent(user_id=typed["user_id"], product_id=typed["product_id"],
                       event_type=typed["event_type"], timestamp=when.timestamp())
    return Event(row, delta, request_id), None


def rewards_by_request(events: list[Event], rewards: dict[str, float]) -> dict[str, float]:
    """Per request id, the largest reward among its events in this batch (the store
    credits a request id at most once, so a click and a purchase sent together
    count as the purchase)."""
    credited: dict[str, float] = {}
    for event in events:
        amount = rewards.get(event.delta.event_type)
        if event.request_id is not None and amount:
            credited[event.request_id] = max(amount, credited.get(event.request_id, 0.0))
    return credited


# --- products -----------------------------------------------------------------------

def parse_product(item: Any, now: datetime, path_id: int | None = None) -> tuple[ProductChange | None, str | None]:
    """One PUT-like product row (category required). ``path_id``, when given, is the
    product id from the URL: the body may repeat it but not contradict it."""
    if not isinstance(item, dict):
        return None, "not a JSON object"
    unknown = _unknown_field(item, PRODUCT_KEYS)
    if unknown:
        return None, unknown
    record = dict(item)
    if path_id is not None:
        if record.get("product_id") is not None:
            typed_id, reason = validate_record(_ID_ONLY, record, as_of=now)
            if reason is not None:
                return None, reason
            if typed_id["product_id"] != path_id:
                return None, (f"product_id: the body says {typed_id['product_id']}, "
                              f"the path {path_id}")
        record["product_id"] = path_id
    typed, reason = validate_record(PRODUCTS, record, as_of=now)
    if reason is not None:
        return None, reason
    # Stamped here unless the sender knows better: the batch ingest lets the latest
    # change win, whichever worker's file it reaches first.
    changed_at = typed.get("changed_at") or now
    row = {k: v for k, v in typed.items() if v is not None}
    row["changed_at"] = _iso(changed_at)
    active = typed["active"] is not False  # missing means active
    change = CatalogChange(product_id=typed["product_id"], active=active,
                           category=typed["category"], changed_at=changed_at.timestamp())
    return ProductChange(row, change), None


def parse_products(items: list, now: datetime) -> list[ProductChange]:
    """A batch of product rows, all valid or InvalidBatch."""
    return _all_or_nothing("product", items, lambda item: parse_product(item, now))


def deactivation(product_id: int, now: datetime) -> ProductChange:
    """DELETE: the landing row carries only the id and ``active: false`` (the batch
    ingest keeps the stored category); the path parser already bounded the id."""
    return ProductChange({"product_id": product_id, "active": False, "changed_at": _iso(now)},
                         CatalogChange(product_id, False, None, now.timestamp()))


_ID_ONLY = Table(name="products", fields=(PRODUCTS.field("product_id"),))


def _iso(moment: datetime) -> str:
    """ISO-8601 in UTC, as the landing files carry times."""
    return moment.astimezone(timezone.utc).isoformat()


def _unknown_field(item: dict, known: frozenset) -> str | None:
    unknown = sorted(str(k) for k in item if k not in known)
    if unknown:
        return f"unknown field {unknown[0][:40]!r} (expected {', '.join(sorted(known))})"
    return None
