"""HTTP routes. Handlers only parse, pick the reader once, call ``recommend`` and
shape the answer; per request there is no file stat and no schema validation."""
from __future__ import annotations

import math
import os

from flask import Blueprint, request
from werkzeug.exceptions import ServiceUnavailable

from lookup_server.bandit import serving_segment
from lookup_server.state import AppState, app_state
from lookup_server.errors import error_body
from lookup_server.metrics import observe_answer
from lookup_server.openapi import openapi_document
from lookup_server.realtime import recommend_with_delta, similar_with_delta
from lookup_server.recommend import Recommendation
from lookup_server.request_params import parse_algorithm, parse_k, parse_product_id, parse_user_id
from lookup_server.snapshot_reader import SnapshotReader

blueprint = Blueprint("lookup", __name__)


@blueprint.get("/v1/users/<user_id>/recommendations")
def user_recommendations(user_id: str):
    state = app_state()
    config = state.config
    uid = parse_user_id(user_id)
    k = parse_k(request.args.get("k"), config.default_k, config.max_k)
    reader = _serving_reader(state)
    algorithm = parse_algorithm(request.args.get("algorithm"), reader.algorithms("user"), "user")
    delta = state.delta.context()
    preference = state.policy().order(config.algorithm_preference)
    algorithms = preference if algorithm is None else (algorithm,)
    # Read once what the snapshot knows of the user: the bandit's segment and arms,
    # the lists to skip and the fallback's profile segment all come from it.
    known = reader.user_lookup(uid) if delta is not None else None
    activity = known.record.activity if known is not None and known.record is not None else None
    if algorithm is None and delta is not None and delta.bandit is not None:
        available = tuple(a for a in preference if a in known.algorithms)
        _, algorithms = delta.bandit.segment_and_order(available, preference, activity)
    merged = recommend_with_delta(reader, delta, uid, k, algorithms, config.similar_preference, known)
    request_id = _new_request_id()
    if delta is not None:  # the impression a click on request_id will reward
        answer = merged.recommendation
        delta.record_served(request_id, answer.algorithm, serving_segment(activity, answer.fallback is None), uid)
    observe_answer(merged)
    return {"user_id": uid, **_answer_fields(merged.recommendation, reader, request_id),
            "degraded": merged.degraded,
            "realtime": {"recent_events": merged.recent_events, "removed": merged.removed,
                         "explored": list(merged.explored), "trending": merged.trending}}


@blueprint.get("/v1/products/<product_id>/similar")
def product_similar(product_id: str):
    state = app_state()
    config = state.config
    pid = parse_product_id(product_id)
    k = parse_k(request.args.get("k"), config.default_k, config.max_k)
    reader = _serving_reader(state)
    algorithm = parse_algorithm(request.args.get("algorithm"), reader.algorithms("product"), "product")
    algorithms = config.similar_preference if algorithm is None else (algorithm,)
    merged = similar_with_delta(reader, state.delta.context(), pid, k, algorithms)
    observe_answer(merged)
    return {"product_id": pid, **_answer_fields(merged.recommendation, reader, _new_request_id()),
            "degraded": merged.degraded}


@blueprint.get("/healthz")
def healthz():
    """Liveness: the process answers. Says nothing about snapshots, on purpose."""
    return {"status": "ok"}


@blueprint.get("/readyz")
def readyz():
    """Readiness: a verified snapshot is in service in this worker."""
    snapshot = app_state().snapshot
    reader = snapshot.reader
    if reader is None:
        return error_body(503, _not_ready_message()), 503
    return {
        "status": "ready",
        "snapshot_version": reader.version,
        "snapshot_created_at": reader.manifest.created_at,
        "loaded_at": reader.loaded_at.isoformat(),
        "rejected_snapshots": snapshot.rejected_count,
        "worker_pid": os.getpid(),
    }


@blueprint.get("/openapi.json")
def openapi_json():
    return openapi_document(app_state().config)


def _new_request_id() -> str:
    """32 random hex digits (128 bits, as a uuid4 without its version bits, at
    a seventh of uuid4's time here: no UUID object is built)."""
    return os.urandom(16).hex()


def _serving_reader(state: AppState) -> SnapshotReader:
    """The reader this request uses from start to end (a swap meanwhile does not affect it)."""
    reader = state.snapshot.reader
    if reader is None:
        retry = max(1, math.ceil(state.config.reload_interval_seconds))
        raise ServiceUnavailable(_not_ready_message(), retry_after=retry)
    return reader


def _not_ready_message() -> str:
    snapshot = app_state().snapshot
    message = "no verified snapshot is loaded yet"
    if snapshot.last_rejection:
        message += f"; last rejected: {snapshot.last_rejection}"
    return message


def _answer_fields(answer: Recommendation, reader: SnapshotReader, request_id: str) -> dict:
    return {
        # Scores are float32 in the snapshot: six significant digits is all they hold,
        # and printing the float64 widening (0.8999999761581421) only adds bytes.
        "items": [{"product_id": p, "score": float(f"{s:.6g}")} for p, s in zip(answer.product_ids, answer.scores)],
        "algorithm": answer.algorithm,
        "fallback": answer.fallback,
        "snapshot_version": reader.version,
        "request_id": request_id,
    }
