"""The lookup API through Flask's test client, against small real snapshots."""
from __future__ import annotations

import json
import time

import pytest

from lookup_server import app_state
from schemas.snapshot import SCORE_RELATIVE_ERROR

from tests.lookup_fixtures import SnapshotContent, publish_snapshot


def _items(response) -> list[tuple[int, float]]:
    return [(item["product_id"], item["score"]) for item in response.get_json()["items"]]


def _error(response, code: int) -> str:
    assert response.status_code == code
    assert response.is_json
    body = response.get_json()
    assert body["error"]["code"] == code
    return body["error"]["message"]


# --- user recommendations ---------------------------------------------------

def test_known_user_gets_own_list_in_order(client):
    """User 1 has only a popular list: it comes back best first, inactive 13 skipped."""
    response = client.get("/v1/users/1/recommendations")
    assert response.status_code == 200
    body = response.get_json()
    assert body["user_id"] == 1
    assert body["algorithm"] == "popular"
    assert body["fallback"] is None
    assert body["snapshot_version"] == "v1"
    assert [p for p, _ in _items(response)] == [10, 11, 12, 14, 15, 99]
    assert [s for _, s in _items(response)] == pytest.approx([0.9, 0.8, 0.7, 0.5, 0.4, 0.3], rel=SCORE_RELATIVE_ERROR)


def test_preference_order_picks_first_algorithm_with_row(client):
    """User 2 has als and popular rows; als comes first in algorithm_preference."""
    body = client.get("/v1/users/2/recommendations").get_json()
    assert body["algorithm"] == "als"
    assert [i["product_id"] for i in body["items"]] == [30, 31, 32]


def test_the_evaluations_order_leads_when_it_measured_popular_best(client, tmp_path):
    """The nightly policy scored popular above als: user 2 now gets popular by default;
    once the policy file goes, the configured order is back."""
    policy_path = tmp_path / "evaluation" / "policy.json"
    policy_path.parent.mkdir()
    policy_path.write_text(json.dumps({"priors": {"all": {"popular": 0.3, "als": 0.2}},
                                       "preference": ["popular", "als"]}))
    time.sleep(0.05)  # the app checks the file every reload_interval_seconds (0.02 here)
    assert client.get("/v1/users/2/recommendations").get_json()["algorithm"] == "popular"
    policy_path.unlink()
    time.sleep(0.05)
    assert client.get("/v1/users/2/recommendations").get_json()["algorithm"] == "als"


def test_k_limits_items(client):
    """k=2 answers exactly the two best items."""
    response = client.get("/v1/users/1/recommendations?k=2")
    assert [p for p, _ in _items(response)] == [10, 11]


def test_inactive_product_skipped_and_k_still_filled(client):
    """With k=4 the inactive 4th item is skipped and the 5th fills its place."""
    response = client.get("/v1/users/1/recommendations?k=4")
    assert [p for p, _ in _items(response)] == [10, 11, 12, 14]


def test_algorithm_param_selects_list(client):
    """algorithm=popular overrides the preference order for user 2."""
    body = client.get("/v1/users/2/recommendations?algorithm=popular").get_json()
    assert body["algorithm"] == "popular"
    assert [i["product_id"] for i in body["items"]] == [20, 21]


def test_unknown_user_gets_global_popular(client):
    """A user without any row gets the global popular list (minus inactive)."""
    body = client.get("/v1/users/424242/recommendations?k=3").get_json()
    assert body["algorithm"] == "popular_fallback"
    assert body["fallback"] == "unknown_user"
    assert [i["product_id"] for i in body["items"]] == [20, 10, 21]


def test_requested_algorithm_without_row_falls_back(client):
    """User 1 has no als row: asking for als answers the popular list of their profile
    segment; user 778 has no row and no profile: the global popular list."""
    body = client.get("/v1/users/1/recommendations?algorithm=als").get_json()
    assert (body["algorithm"], body["fallback"]) == ("popular_fallback", "profile_segment")
    body = client.get("/v1/users/778/recommendations?algorithm=als").get_json()
    assert (body["algorithm"], body["fallback"]) == ("popular_fallback", "unknown_user")


def test_request_ids_are_unique_hex(client):
    """Each answer carries its own random 32-hex-digit request id."""
    ids = {client.get("/v1/users/1/recommendations").get_json()["request_id"] for _ in range(3)}
    assert len(ids) == 3
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_largest_user_id_accepted(client):
    """2**63-1 is a valid user id (and unknown here)."""
    response = client.get(f"/v1/users/{2**63 - 1}/recommendations")
    assert response.status_code == 200
    assert response.get_json()["user_id"] == 2**63 - 1


@pytest.mark.parametrize("user_id", ["abc", "-1", "99999999999999999999", str(2**63), "1.5", "+1", "١"])
def test_bad_user_id_is_400(client, user_id):
    """Anything but a decimal int64 >= 0 is refused, naming user_id."""
    message = _error(client.get(f"/v1/users/{user_id}/recommendations"), 400)
    assert "user_id" in message


@pytest.mark.parametrize("k", ["0", "10000", "x", "-3", ""])
def test_bad_k_is_400(client, k):
    """k outside [1, max_k] or not an integer is refused, naming k."""
    message = _error(client.get(f"/v1/users/1/recommendations?k={k}"), 400)
    assert message.startswith("k must be")


def test_max_k_accepted(client, app):
    """k == max_k is allowed."""
    max_k = app_state(app).config.max_k
    assert client.get(f"/v1/users/1/recommendations?k={max_k}").status_code == 200


def test_unknown_algorithm_is_400_naming_available(client):
    """An algorithm the snapshot lacks is refused with the ones it has."""
    message = _error(client.get("/v1/users/1/recommendations?algorithm=nope"), 400)
    assert "'nope'" in message and "als, popular" in message


# --- similar products -------------------------------------------------------

def test_similar_from_own_list(client):
    """Product 10 has an als list: in order, inactive 13 skipped."""
    body = client.get("/v1/products/10/similar").get_json()
    assert (body["product_id"], body["algorithm"], body["fallback"]) == (10, "als", None)
    assert [i["product_id"] for i in body["items"]] == [11, 12, 14]


def test_similar_falls_back_to_category_without_self(client):
    """Product 11 has no list: its category's popular list, without 11 and inactive 13."""
    body = client.get("/v1/products/11/similar").get_json()
    assert (body["algorithm"], body["fallback"]) == ("popular_fallback", "category_popular")
    assert [i["product_id"] for i in body["items"]] == [10, 12, 14]


def test_similar_known_product_without_category_list(client):
    """Product 40's category has no list: global popular, marked global_popular."""
    body = client.get("/v1/products/40/similar?k=2").get_json()
    assert body["fallback"] == "global_popular"
    assert [i["product_id"] for i in body["items"]] == [20, 10]


def test_similar_unknown_product_gets_global_popular(client):
    """A product not in the catalogue gets global popular, never 404."""
    response = client.get("/v1/products/777/similar?k=3")
    assert response.status_code == 200
    body = response.get_json()
    assert (body["algorithm"], body["fallback"]) == ("popular_fallback", "unknown_product")
    assert [i["product_id"] for i in body["items"]] == [20, 10, 21]


def test_similar_excludes_the_product_from_global_fallback(client):
    """Unknown-to-lists product 20 is in the catalogue (books, no list) -> global without 20."""
    body = client.get("/v1/products/20/similar").get_json()
    assert body["fallback"] == "global_popular"
    assert 20 not in [i["product_id"] for i in body["items"]]


@pytest.mark.parametrize("product_id", ["abc", "-1", str(2**32), "99999999999999999999"])
def test_bad_product_id_is_400(client, product_id):
    """product_id must fit 4 unsigned bytes."""
    assert "product_id" in _error(client.get(f"/v1/products/{product_id}/similar"), 400)


def test_largest_product_id_accepted(client):
    """2**32-1 is a valid product id."""
    assert client.get(f"/v1/products/{2**32 - 1}/similar").status_code == 200


def test_similar_unknown_algorithm_is_400(client):
    """Only recs/product algorithms are valid for similar (popular has no product lists)."""
    message = _error(client.get("/v1/products/10/similar?algorithm=popular"), 400)
    assert "available: als" in message


# --- probes, errors, no snapshot --------------------------------------------

def test_healthz(client):
    """Liveness answers ok."""
    response = client.get("/healthz")
    assert (response.status_code, response.get_json()) == (200, {"status": "ok"})


def test_readyz_reports_version(client):
    """Readiness names the snapshot in service and when it was loaded."""
    body = client.get("/readyz").get_json()
    assert body["status"] == "ready"
    assert body["snapshot_version"] == "v1"
    assert body["loaded_at"]


def test_unknown_route_is_404_json(client):
    """Even a route Flask does not know answers JSON."""
    assert "not found" in _error(client.get("/v2/nothing"), 404).lower()


def test_wrong_method_is_405_json_with_allow(client):
    """POST on a GET route: 405 JSON keeping the Allow header."""
    response = client.post("/healthz")
    _error(response, 405)
    assert "GET" in response.headers["Allow"]


def test_unexpected_exception_is_500_json(app, client, monkeypatch):
    """A bug in a handler becomes a logged 500 JSON, not an HTML page."""
    import lookup_server.api as api

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(api, "recommend_with_delta", boom)
    message = _error(client.get("/v1/users/1/recommendations"), 500)
    assert "boom" not in message  # internals stay in the log


def test_no_snapshot_is_503_everywhere(make_app):
    """Before anything is published, readiness and recommendations answer 503 JSON."""
    client = make_app().test_client()
    _error(client.get("/readyz"), 503)
    response = client.get("/v1/users/1/recommendations")
    assert "no verified snapshot" in _error(response, 503)
    assert int(response.headers["Retry-After"]) >= 1
    _error(client.get("/v1/products/1/similar"), 503)
    assert client.get("/healthz").status_code == 200


def test_bad_params_checked_before_readiness(make_app):
    """A malformed request is a 400 even when no snapshot is loaded."""
    client = make_app().test_client()
    _error(client.get("/v1/users/abc/recommendations"), 400)


def test_snapshot_without_global_popular_answers_empty(make_app, snapshot_root):
    """Unknown user, no global list: 200 with no items rather than an error."""
    publish_snapshot(snapshot_root, "v1", SnapshotContent(global_popular=None))
    app = make_app()
    app_state(app).snapshot.refresh()
    body = app.test_client().get("/v1/users/999/recommendations").get_json()
    assert (body["items"], body["fallback"]) == ([], "unknown_user")
