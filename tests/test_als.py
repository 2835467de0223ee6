"""ALS candidates on two hand-made taste groups (tests/taste_groups.py)."""
from __future__ import annotations

import math
from dataclasses import replace
from datetime import timedelta

import numpy as np
import pytest

from jobs.als import (SOLVERS, AlsParams, ItemMatrix, collect_item_matrix, confidence_from_interactions, dense_index,
                      similar_products, top_by_norm, top_k_lists, user_recommendations)
from jobs.interactions import weighted
from schemas.settings import load_conf
from tests.candidate_contract import assert_candidates_contract
from tests.taste_groups import ALL_PRODUCTS, AS_OF, BOUGHT, P, ROWS, SCHEMA, U, VIEWED_ONLY, group_of_product, group_of_user

pytestmark = pytest.mark.spark

PARAMS = AlsParams(rank=4, max_iter=10, reg_param=0.05, alpha=10.0, half_life_days=30.0, top_n=5,
                   similar_top_n=5, exclude_purchased=True, seed=42,
                   event_weights={"view": 1.0, "purchase": 8.0})


@pytest.fixture(scope="module")
def interactions(spark):
    return spark.createDataFrame(ROWS, SCHEMA)


@pytest.fixture(scope="module", params=SOLVERS)
def run(request, interactions):
    """(candidate rows by (kind, subject), item factor rows) of the PARAMS run, per solver."""
    from jobs.als import als_candidates

    candidates, factors = als_candidates(interactions, AS_OF, replace(PARAMS, solver=request.param))
    rows = assert_candidates_contract(candidates)
    return {(r["subject_kind"], int(r["subject_id"])): r for r in rows}, factors.collect()


def _user_lists(lists):
    return {s: list(r["product_ids"]) for (k, s), r in lists.items() if k == "user"}


def test_every_user_and_product_gets_a_list_cut_at_its_length(run):
    """20 user lists of top_n, 20 product lists of similar_top_n, under the real int64 ids."""
    lists, _ = run
    assert sorted(s for k, s in lists if k == "user") == [U + u for u in range(1, 21)]
    assert sorted(s for k, s in lists if k == "product") == sorted(
        P + first + j for first in (100, 200) for j in range(10))
    assert all(len(r["product_ids"]) == (PARAMS.top_n if k == "user" else PARAMS.similar_top_n)
               for (k, _), r in lists.items())
    all_ids = {p for r in lists.values() for p in r["product_ids"]}
    assert all_ids <= ALL_PRODUCTS
    assert {r["algorithm"] for r in lists.values()} == {"als"}
    assert {r["model_version"] for r in lists.values()} == {lists[("user", U + 1)]["model_version"]}
    assert lists[("user", U + 1)]["model_version"].startswith("als-20261001T000000Z-")


def test_users_get_their_own_groups_products_not_bought(run):
    """At least 80 % of the top-3 are from the user's group; nothing bought is listed."""
    user_lists = _user_lists(run[0])
    top3 = [(u, p) for u, ids in user_lists.items() for p in ids[:3]]
    own = sum(group_of_product(p) == group_of_user(u) for u, p in top3)
    assert own >= 0.8 * len(top3), user_lists
    assert not [(u, p) for u, ids in user_lists.items() for p in ids if (u, p) in BOUGHT]


def test_viewed_but_not_bought_products_stay_in(run):
    """Only purchases are excluded: the product a user merely viewed is usually listed."""
    user_lists = _user_lists(run[0])
    listed = sum(VIEWED_ONLY[u] in ids for u, ids in user_lists.items())
    assert listed >= 16, user_lists


def test_purchases_are_listed_when_not_excluded(interactions):
    """exclude_purchased = false: every user's list holds some of what they bought."""
    from jobs.als import als_ratings, fit_factors, item_factors, user_factors

    params = replace(PARAMS, exclude_purchased=False)
    confidence = confidence_from_interactions(weighted(interactions, AS_OF, params))
    users, products = dense_index(confidence, "user_id"), dense_index(confidence, "product_id")
    fitted = fit_factors(als_ratings(confidence, users, products), users.count(), products.count(), params)
    items = collect_item_matrix(item_factors(fitted, products, "test"))
    purchased = interactions.where("event_type = 'purchase'").select("user_id", "product_id")
    rows = user_recommendations(user_factors(fitted, users), items, purchased, params).collect()
    assert len(rows) == 20
    for r in rows:
        assert len(r["product_ids"]) == params.top_n
        assert any((int(r["subject_id"]), p) in BOUGHT for p in r["product_ids"]), r


def test_similar_products_are_same_group_and_never_the_product(run):
    lists, _ = run
    similar = {s: list(r["product_ids"]) for (k, s), r in lists.items() if k == "product"}
    pairs = [(s, p) for s, ids in similar.items() for p in ids]
    assert not [s for s, ids in similar.items() if s in ids]
    own = sum(group_of_product(p) == group_of_product(s) for s, p in pairs)
    assert own >= 0.8 * len(pairs), similar


def test_item_factors_one_row_per_product_of_length_rank(run):
    lists, factors = run
    assert sorted(r["product_id"] for r in factors) == sorted(s for k, s in lists if k == "product")
    assert {len(r["factors"]) for r in factors} == {PARAMS.rank}
    assert all(math.isfinite(x) for r in factors for x in r["factors"])
    assert {r["model_version"] for r in factors} == {lists[("user", U + 1)]["model_version"]}


def _random_items(rng, n, rank) -> ItemMatrix:
    ids = np.sort(rng.choice(2**32, size=n, replace=False)).astype(np.int64)
    return ItemMatrix(ids=ids, factors=rng.normal(size=(n, rank)).astype(np.float32))


def test_similar_products_is_exact_cosine_top_k(spark):
    """Blocked similar_products equals a brute-force numpy cosine top-K."""
    rng = np.random.default_rng(7)
    items, k = _random_items(rng, 60, 6), 7
    got = {int(r["subject_id"]): (list(r["product_ids"]), list(r["scores"]))
           for r in similar_products(spark, items, AlsParams(similar_top_n=k), block_rows=7).collect()}

    unit = items.factors.astype(np.float64) / np.linalg.norm(items.factors, axis=1, keepdims=True)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    assert sorted(got) == items.ids.tolist()
    for row, product in enumerate(items.ids):
        best = np.argsort(-sims[row])[:k]
        got_ids, got_scores = got[int(product)]
        assert got_ids == items.ids[best].tolist(), product
        np.testing.assert_allclose(got_scores, sims[row, best], atol=1e-5)


def test_user_recommendations_are_exact_top_n_minus_purchases(spark):
    """Blocked user_recommendations equals a brute-force numpy dot-product top-N with
    purchases masked; a user who bought everything gets no list; unknown products
    among the purchases are ignored."""
    rng = np.random.default_rng(11)
    items, n_users, top_n = _random_items(rng, 40, 5), 25, 8
    users = rng.normal(size=(n_users, 5)).astype(np.float32)
    bought = {u: set(rng.choice(items.ids, size=int(rng.integers(0, 15)), replace=False).tolist())
              for u in range(n_users)}
    bought[3] = set(items.ids.tolist())
    purchased = spark.createDataFrame([(u, p) for u, ps in bought.items() for p in ps] + [(0, 123)],
                                      "user_id long, product_id long")
    user_df = spark.createDataFrame([(u, [float(x) for x in v]) for u, v in enumerate(users)],
                                    "user_id long, factors array<float>")
    got = {int(r["subject_id"]): (list(r["product_ids"]), list(r["scores"]))
           for r in user_recommendations(user_df, items, purchased, AlsParams(top_n=top_n), block_rows=4).collect()}

    scores = users.astype(np.float64) @ items.factors.T.astype(np.float64)
    assert sorted(got) == [u for u in range(n_users) if u != 3]
    for u, (got_ids, got_scores) in got.items():
        allowed = [j for j in range(len(items)) if items.ids[j] not in bought[u]]
        best = sorted(allowed, key=lambda j: -scores[u, j])[:top_n]
        assert got_ids == items.ids[best].tolist(), u
        np.testing.assert_allclose(got_scores, scores[u, best], rtol=1e-4, atol=1e-4)


def _lists(batches) -> dict[str, tuple[list, list]]:
    return {subject: (ids, scores) for batch in batches
            for subject, ids, scores in zip(*(batch.column(c).to_pylist() for c in range(3)))}


@pytest.mark.parametrize("sample_size", [8, 9, 40, 299])
def test_top_k_from_a_sampled_floor_equals_ranking_every_item(sample_size):
    """The sampled floor only skips items that cannot make a list: same lists as
    ranking all 300 items, exclusions included -- a user left with 3 allowed items
    (the sample's floor is -inf), one with none (no list)."""
    rng = np.random.default_rng(5)
    items, item_ids = rng.normal(size=(300, 6)).astype(np.float32), np.arange(1000, 1300)
    queries, k = rng.normal(size=(50, 6)).astype(np.float32), 8
    rows = [np.repeat(q, n) for q, n in enumerate(rng.integers(0, 40, size=50))]
    excluded = [(np.concatenate(rows), np.concatenate([rng.choice(300, len(r), replace=False) for r in rows]))]
    others = ~np.isin(excluded[0][0], [5, 6])
    excluded.append((np.r_[excluded[0][0][others], [5] * 297, [6] * 300],
                     np.r_[excluded[0][1][others], np.arange(3, 300), np.arange(300)]))
    subjects = np.arange(50)
    for rows_cols in excluded:
        every_item = _lists(top_k_lists(subjects, queries, items, item_ids, k, rows_cols, 7, sample_size=300))
        sampled = _lists(top_k_lists(subjects, queries, items, item_ids, k, rows_cols, 7, sample_size=sample_size))
        assert sampled == every_item
    assert len(every_item["5"][0]) == 3 and "6" not in every_item and len(every_item) == 49


def test_dense_index_numbers_distinct_ids_in_order(spark):
    """0..n-1 in id order, whatever the partitioning, for ids up to 2^63-1."""
    values = [2**63 - 1, 0, 5, 2**62, 5, 2**31, 7, 0, 2**32 - 1]
    df = spark.createDataFrame([(v,) for v in values], "user_id long").repartition(3)
    got = sorted((r["index"], r["user_id"]) for r in dense_index(df, "user_id").collect())
    assert got == list(enumerate(sorted(set(values))))


def test_confidence_is_log1p_of_decayed_weights(spark):
    rows = [(1, 10, "view", AS_OF), (1, 10, "purchase", AS_OF - timedelta(days=30)),
            (2, 10, "view", AS_OF - timedelta(days=60)), (2, 11, "view", AS_OF + timedelta(hours=1))]
    df = spark.createDataFrame(rows, "user_id long, product_id long, event_type string, timestamp timestamp")
    got = {(r["user_id"], r["product_id"]): r["rating"]
           for r in confidence_from_interactions(weighted(df, AS_OF, PARAMS)).collect()}
    assert got.keys() == {(1, 10), (2, 10)}  # the future view is not counted
    assert got[(1, 10)] == pytest.approx(math.log1p(1.0 + 8.0 * 0.5))
    assert got[(2, 10)] == pytest.approx(math.log1p(0.25))


def test_conf_als_section_is_valid():
    params = AlsParams(**load_conf("jobs")["als"])
    assert params.rank >= 1 and params.event_weights


@pytest.mark.parametrize("bad", [
    {"rank": 0}, {"max_iter": 0}, {"top_n": 0}, {"similar_top_n": -1}, {"rank": 2.5}, {"rank": True},
    {"reg_param": -0.1}, {"alpha": float("nan")}, {"half_life_days": 0}, {"exclude_purchased": "yes"},
    {"event_weights": {"like": 1.0}}, {"event_weights": {"view": -1.0}},
    {"event_weights": {"view": 0.0}}, {"solver": "sgd"},
])
def test_params_reject_bad_values(bad):
    with pytest.raises(ValueError):
        AlsParams(**bad)


def test_no_interactions_is_an_error_not_an_empty_run(spark):
    """Nothing up to as_of: a clear error, so the previous lists are not replaced by none."""
    from jobs.als import als_candidates

    future = spark.createDataFrame([(1, 10, "view", AS_OF + timedelta(days=1))],
                                   "user_id long, product_id long, event_type string, timestamp timestamp")
    with pytest.raises(ValueError, match="no interactions"):
        als_candidates(future, AS_OF, PARAMS)


@pytest.mark.parametrize(("first_width", "block_rows"), [(10, 7), (23, 7), (23, 60), (100, 60)])
@pytest.mark.parametrize("norms", ["skewed", "equal"])
def test_top_k_by_norm_equals_ranking_every_item(norms, first_width, block_rows):
    """Pruning by norm only skips items that cannot make a list: the same lists as
    ranking all 400 items, exclusions included (a user left with 3 allowed items,
    one with none), whether the norms are skewed (with a shared direction, as ALS
    factors have, half the rows stop at a short prefix, some at a longer one) or all
    equal (nothing can be pruned), from any first prefix."""
    rng = np.random.default_rng(8)
    items = np.abs(rng.normal(size=(400, 6))).astype(np.float32)
    if norms == "skewed":
        items *= (rng.pareto(1.5, size=400) + 0.01).astype(np.float32)[:, None]
    else:
        items /= np.linalg.norm(items, axis=1, keepdims=True)
    item_ids, queries, k = np.arange(5000, 5400), rng.normal(size=(60, 6)).astype(np.float32), 10
    queries[:30] = np.abs(queries[:30])
    rows = [np.repeat(q, n) for q, n in enumerate(rng.integers(0, 50, size=60))]
    some = (np.concatenate(rows), np.concatenate([rng.choice(400, len(r), replace=False) for r in rows]))
    others = ~np.isin(some[0], [5, 6])
    excluded = (np.r_[some[0][others], [5] * 397, [6] * 400], np.r_[some[1][others], np.arange(3, 400), np.arange(400)])
    subjects = np.arange(60)
    every_item = _lists(top_k_lists(subjects, queries, items, item_ids, k, excluded, block_rows, sample_size=400))
    by_norm = _lists(top_k_lists(subjects, queries, items, item_ids, k, excluded, block_rows,
                                 sample_size=first_width, by_norm=True))
    assert by_norm.keys() == every_item.keys()
    assert len(every_item["5"][0]) == 3 and "6" not in every_item and len(every_item) == 59
    for subject, (ids, scores) in every_item.items():
        assert by_norm[subject][0] == ids, subject
        np.testing.assert_allclose(by_norm[subject][1], scores, rtol=1e-6)


class _PrefixesRead(np.ndarray):
    """An item matrix that records the prefix lengths sliced from it."""
    stops: list = []

    def __getitem__(self, key):
        if isinstance(key, slice):
            _PrefixesRead.stops.append(key.stop)
        return super().__getitem__(key)


def test_top_by_norm_stops_at_a_short_prefix_when_norms_are_skewed():
    """With one item far longer than the rest, every query's best item is known from
    the first prefix: the rest of the catalog is never scored."""
    rng = np.random.default_rng(3)
    items = np.vstack([[100.0, 0.0], rng.normal(size=(999, 2)) * 0.01]).astype(np.float32)
    norms = np.linalg.norm(items, axis=1)
    items, norms = items[np.argsort(-norms)], np.sort(norms)[::-1]  # as top_k_lists passes them
    queries = (np.abs(rng.normal(size=(20, 2))) + [1.0, 0.0]).astype(np.float32)
    _PrefixesRead.stops = []
    columns, values = top_by_norm(queries, items.view(_PrefixesRead), norms, 1,
                                  (np.array([], int), np.array([], int)), first_width=4)
    assert _PrefixesRead.stops == [4]
    assert (columns[:, 0] == 0).all()
    np.testing.assert_allclose(values[:, 0], queries[:, 0] * 100.0, rtol=1e-6)
