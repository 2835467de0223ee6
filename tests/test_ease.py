"""EASE candidates: the closed form against a plain NumPy inverse, and the Spark job on
two hand-made taste groups (tests/taste_groups.py)."""
from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import numpy as np
import pytest
from scipy import sparse

from jobs import ease
from jobs.ease import EaseParams, ease_candidates, ease_weights, interaction_pairs
from schemas.settings import load_conf
from tests.candidate_contract import assert_candidates_contract
from tests.taste_groups import (ALL_PRODUCTS, AS_OF, BOUGHT, ROWS, SCHEMA, U, VIEWED_ONLY, group_of_product,
                                group_of_user)

PARAMS = EaseParams(l2=1.0, top_n=5, similar_top_n=5, event_weights={"view": 1.0, "purchase": 8.0})


def test_weights_are_the_closed_form():
    """B = I - P diag(1/diag(P)), P = (XᵀX + l2 I)⁻¹, diagonal zero, as the paper's four lines."""
    rng = np.random.default_rng(3)
    dense = (rng.random((60, 12)) < 0.3).astype(np.float64)
    l2 = 5.0
    inverse = np.linalg.inv(dense.T @ dense + l2 * np.eye(12))
    expected = np.eye(12) - inverse / np.diag(inverse)
    got = ease_weights(sparse.csr_matrix(dense), l2)
    assert got.dtype == np.float32 and np.all(np.diag(got) == 0)
    np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.fixture(scope="module")
def interactions(spark):
    return spark.createDataFrame(ROWS, SCHEMA)


@pytest.fixture(scope="module")
def lists(interactions):
    rows = assert_candidates_contract(ease_candidates(interactions, AS_OF, PARAMS))
    return {(r["subject_kind"], int(r["subject_id"])): r for r in rows}


@pytest.mark.spark
class TestOnTasteGroups:
    def test_every_user_and_product_gets_a_list(self, lists):
        assert sorted(s for k, s in lists if k == "user") == [U + u for u in range(1, 21)]
        assert {s for k, s in lists if k == "product"} == ALL_PRODUCTS
        assert all(len(r["product_ids"]) == 5 for r in lists.values())
        assert {r["algorithm"] for r in lists.values()} == {"ease"}
        assert {r["model_version"] for r in lists.values()} == {lists[("user", U + 1)]["model_version"]}
        assert lists[("user", U + 1)]["model_version"].startswith("ease-20261001T000000Z-")

    def test_users_get_their_own_groups_products_not_bought(self, lists):
        users = {s: list(r["product_ids"]) for (k, s), r in lists.items() if k == "user"}
        top3 = [(u, p) for u, ids in users.items() for p in ids[:3]]
        assert all(group_of_product(p) == group_of_user(u) for u, p in top3), users
        assert not [(u, p) for u, ids in users.items() for p in ids if (u, p) in BOUGHT]
        # Only purchases are excluded: what a user merely viewed may come back.
        assert sum(VIEWED_ONLY[u] in ids for u, ids in users.items()) >= 10

    def test_similar_products_are_same_group_and_never_the_product(self, lists):
        similar = {s: list(r["product_ids"]) for (k, s), r in lists.items() if k == "product"}
        assert not [s for s, ids in similar.items() if s in ids]
        assert all(group_of_product(p) == group_of_product(s) for s, ids in similar.items() for p in ids[:3])

    def test_user_lists_are_the_top_n_of_x_times_b(self, interactions, lists):
        """Each list is the top 5 of the user's row of X times B, purchases out: every score is
        that product's, and nothing left out scores more than the list's last (float32 rounding
        may swap exact ties, which two symmetric groups have plenty of)."""
        pairs = interaction_pairs(interactions, AS_OF, PARAMS).collect()
        ids = np.array(sorted(ALL_PRODUCTS))
        users = sorted({r["user_id"] for r in pairs})
        x = np.zeros((len(users), len(ids)))
        for r in pairs:
            x[users.index(r["user_id"]), np.searchsorted(ids, r["product_id"])] = r["value"]
        scores = x @ ease_weights(sparse.csr_matrix(x), PARAMS.l2)
        for row, user in enumerate(users):
            expected = {p: scores[row, i] for i, p in enumerate(ids) if (user, p) not in BOUGHT}
            got = lists[("user", user)]
            np.testing.assert_allclose(got["scores"], [expected[p] for p in got["product_ids"]], atol=1e-5)
            left_out = [score for p, score in expected.items() if p not in got["product_ids"]]
            assert max(left_out) <= got["scores"][-1] + 1e-5, user

    def test_only_the_items_with_most_users_are_modelled(self, interactions):
        """exact with max_items = 4: lists name only the 4 products with the most users, the rest get none."""
        pairs = interaction_pairs(interactions, AS_OF, PARAMS).groupBy("product_id").count().collect()
        by_users = sorted(pairs, key=lambda r: (-r["count"], r["product_id"]))
        kept = {r["product_id"] for r in by_users[:4]}
        rows = ease_candidates(interactions, AS_OF, replace(PARAMS, max_items=4, method="exact")).collect()
        assert {int(r["subject_id"]) for r in rows if r["subject_kind"] == "product"} == kept
        assert {p for r in rows for p in r["product_ids"]} <= kept

    def test_for_users_lists_only_those_and_the_same(self, spark, interactions, lists):
        chosen = spark.createDataFrame([(U + 3,), (U + 15,)], "user_id long")
        rows = ease_candidates(interactions, AS_OF, PARAMS, product_lists=False, for_users=chosen).collect()
        assert {int(r["subject_id"]) for r in rows} == {U + 3, U + 15}
        for r in rows:
            assert list(r["product_ids"]) == list(lists[("user", int(r["subject_id"]))]["product_ids"])

    def test_purchases_come_back_when_not_excluded(self, interactions):
        rows = ease_candidates(interactions, AS_OF, replace(PARAMS, exclude_purchased=False),
                               product_lists=False).collect()
        assert sum(any((int(r["subject_id"]), p) in BOUGHT for p in r["product_ids"]) for r in rows) >= 10

    def test_nothing_to_model_is_an_error_not_an_empty_run(self, spark):
        """No product with min_item_users users: a clear error, so the previous lists stay."""
        lone = spark.createDataFrame([(1, 10, "view", AS_OF - timedelta(days=1))], SCHEMA)
        with pytest.raises(ValueError, match="nothing for EASE to model"):
            ease_candidates(lone, AS_OF, PARAMS)


KNN = replace(PARAMS, method="knn", neighbours=4, shrink=2.0)


def shrunk_cosine(x: np.ndarray, shrink: float, neighbours: int) -> np.ndarray:
    """The knn weights by hand: co-occurrences over the root of the items' squared norms plus
    ``shrink``, no self-similarity, each row's ``neighbours`` best kept (ties: smaller column)."""
    together = x.T @ x
    norms = np.diag(together).copy()
    similarity = together / (np.sqrt(np.outer(norms, norms)) + shrink)
    np.fill_diagonal(similarity, 0.0)
    kept = np.zeros_like(similarity)
    for i, row in enumerate(similarity):
        best = np.lexsort((np.arange(len(row)), -row))[:neighbours]
        kept[i, best] = row[best]
    return kept


@pytest.mark.spark
class TestKnn:
    """The scalable variant: Spark's pruned shrunk cosine, scored as B is."""

    @pytest.fixture(scope="class")
    def knn_lists(self, interactions):
        rows = assert_candidates_contract(ease_candidates(interactions, AS_OF, KNN))
        return {(r["subject_kind"], int(r["subject_id"])): r for r in rows}

    def test_weights_are_the_pruned_shrunk_cosine(self, interactions):
        pairs = interaction_pairs(interactions, AS_OF, KNN)
        model, _ = ease.fit(pairs, KNN)
        users = sorted({r["user_id"] for r in pairs.collect()})
        x = np.zeros((len(users), len(model.ids)))
        for r in pairs.collect():
            x[users.index(r["user_id"]), np.searchsorted(model.ids, r["product_id"])] = r["value"]
        assert sparse.issparse(model.weights) and model.weights.getnnz(axis=1).max() == KNN.neighbours
        np.testing.assert_allclose(model.weights.toarray(), shrunk_cosine(x, KNN.shrink, KNN.neighbours), atol=1e-5)

    def test_users_and_products_get_their_own_groups(self, knn_lists):
        users = {s: list(r["product_ids"]) for (k, s), r in knn_lists.items() if k == "user"}
        assert sorted(users) == [U + u for u in range(1, 21)]
        assert all(group_of_product(p) == group_of_user(u) for u, ids in users.items() for p in ids[:3]), users
        assert not [(u, p) for u, ids in users.items() for p in ids if (u, p) in BOUGHT]
        similar = {s: list(r["product_ids"]) for (k, s), r in knn_lists.items() if k == "product"}
        assert set(similar) == ALL_PRODUCTS and not [s for s, ids in similar.items() if s in ids]
        assert all(len(ids) <= KNN.neighbours for ids in similar.values())
        assert all(group_of_product(p) == group_of_product(s) for s, ids in similar.items() for p in ids[:2])

    def test_auto_takes_exact_while_the_items_fit_and_knn_past_that(self, interactions):
        pairs = interaction_pairs(interactions, AS_OF, PARAMS)
        candidates = len(ease.worth_modelling(pairs, PARAMS))
        assert ease.chosen_method(candidates, PARAMS) == "exact"
        assert ease.chosen_method(candidates, replace(PARAMS, max_items=4)) == "knn"
        assert ease.chosen_method(candidates, replace(PARAMS, method="knn")) == "knn"
        model, _ = ease.fit(pairs, replace(PARAMS, max_items=4, neighbours=3))
        assert len(model.ids) == len(ALL_PRODUCTS) and sparse.issparse(model.weights)  # every item modelled


def test_conf_ease_section_is_valid():
    params = EaseParams(**load_conf("jobs")["ease"])
    assert params.l2 > 0 and params.event_weights


@pytest.mark.parametrize("bad", [
    {"l2": 0}, {"l2": -1.0}, {"l2": float("nan")}, {"l2": True}, {"max_items": 0}, {"min_item_users": 0},
    {"top_n": 2.5}, {"value": "counts"}, {"exclude_purchased": "yes"}, {"half_life_days": 0},
    {"event_weights": {"like": 1.0}}, {"event_weights": {"view": 0.0}}, {"method": "sansa"}, {"neighbours": 0},
    {"shrink": -1.0}, {"max_user_items": 0},
])
def test_params_reject_bad_values(bad):
    with pytest.raises(ValueError):
        EaseParams(**bad)
