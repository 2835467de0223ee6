"""Offline evaluation: splits without leakage, segments, served lists, metrics, policy."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from jobs.evaluation import (
    BASELINE, EvaluationParams, evaluate, k_core, leave_last_out_split, policy_from_results, random_split,
    scored_users, served_lists, temporal_split, user_segments,
)
from jobs.ranking_metrics import ranking_metrics
from schemas import CANDIDATES, PRODUCTS_STORED, spark_schema
from schemas.settings import load_conf

pytestmark = pytest.mark.spark

AS_OF = datetime(2026, 10, 10, tzinfo=timezone.utc)
ROWS = "user_id long, product_id long, event_type string, timestamp timestamp"


def day(n: float) -> datetime:
    return AS_OF - timedelta(days=n)


@pytest.fixture(scope="module")
def rows(spark):
    return spark.createDataFrame([
        (1, 10, "view", day(5)), (1, 11, "purchase", day(4)),
        (1, 11, "view", day(1)), (1, 12, "view", day(1)),     # 11 bought before: not relevant
        (2, 10, "view", day(1)),                               # a new user: all activity held out
        (3, 10, "view", day(6)), (3, 12, "view", day(5)), (3, 13, "view", day(5)),
        (3, 10, "view", day(4)), (3, 12, "purchase", day(3)), (3, 13, "view", day(3)),
        (3, 14, "view", day(0.5)),
        (4, 10, "view", day(5)),                               # nothing held out: not scored
        (5, 99, "view", AS_OF + timedelta(days=1)),            # after as-of: ignored
    ], ROWS)


def test_temporal_split_holds_out_the_last_days(rows):
    """Training ends at the split time; relevant items exclude earlier purchases."""
    split = temporal_split(rows, AS_OF, EvaluationParams(holdout_days=2))
    assert split.train_until == day(2)
    assert split.train.agg({"timestamp": "max"}).first()[0].replace(tzinfo=timezone.utc) < day(2)
    held = {r.user_id: list(r.relevant) for r in split.held_out.collect()}
    assert held == {1: [12], 2: [10], 3: [14]}


def test_leave_last_out_holds_each_users_last_row(rows):
    """The last interaction per user is held out, the rest trains."""
    split = leave_last_out_split(rows, AS_OF, EvaluationParams(split="leave_last_out"))
    held = {r.user_id: list(r.relevant) for r in split.held_out.collect()}
    assert held == {1: [12], 2: [10], 3: [14], 4: [10]}
    assert split.train.where("user_id = 2").count() == 0 and split.train.where("user_id = 1").count() == 3


def test_random_split_holds_out_a_share_of_each_users_products_with_all_their_rows(spark):
    """8 products per user, 25 %: 2 held out per user, every row of a held-out pair with them."""
    data = [(u, p, "view", day(n)) for u in (1, 2, 3) for p in range(10, 18) for n in (1, 3)]
    rows = spark.createDataFrame(data, ROWS)
    params = EvaluationParams(split="random", test_fraction=0.25, seed=3)
    split = random_split(rows, AS_OF, params)
    held = {r.user_id: set(r.relevant) for r in split.held_out.collect()}
    assert {u: len(p) for u, p in held.items()} == {1: 2, 2: 2, 3: 2}
    trained = {(r.user_id, r.product_id) for r in split.train.collect()}
    assert split.train.count() == 2 * (24 - 6)  # two rows per pair left
    assert not any((u, p) in trained for u, products in held.items() for p in products)
    assert split.train_until == AS_OF
    again = {r.user_id: set(r.relevant) for r in random_split(rows, AS_OF, params).held_out.collect()}
    assert again == held  # seeded
    other = random_split(rows, AS_OF, EvaluationParams(split="random", test_fraction=0.25, seed=4))
    assert {r.user_id: set(r.relevant) for r in other.held_out.collect()} != held


def test_k_core_drops_until_every_user_and_product_has_k_rows(spark):
    """User 4 and product 30 have one row each; without 30, user 3 has one row left and goes next round."""
    rows = spark.createDataFrame([
        (1, 10, "view", day(1)), (1, 20, "view", day(1)), (2, 10, "view", day(1)), (2, 20, "view", day(2)),
        (3, 20, "view", day(1)), (3, 30, "view", day(1)), (4, 40, "view", day(1)),
    ], ROWS)
    kept = {(r.user_id, r.product_id) for r in k_core(rows, 2).collect()}
    assert kept == {(1, 10), (1, 20), (2, 10), (2, 20)}
    assert k_core(rows, 0).count() == 7


def test_segments_by_training_interactions(rows):
    """No training rows is new; up to the threshold light; more heavy."""
    split = temporal_split(rows, AS_OF, EvaluationParams(holdout_days=2))
    segments = {r.user_id: r.segment for r in user_segments(
        split.train, split.held_out, EvaluationParams(light_max_interactions=2)).collect()}
    assert segments == {1: "light", 2: "new", 3: "heavy"}


def test_scored_users_are_a_seeded_sample_past_the_cap(spark):
    """The same users for the same seed, others for another; everyone under the cap or at 0."""
    held_out = spark.createDataFrame([(u, [10]) for u in range(1, 201)], "user_id long, relevant array<bigint>")

    def sample(cap, seed):
        return {r.user_id for r in scored_users(held_out, cap, seed).collect()}

    chosen = sample(50, 42)
    assert len(chosen) == 50 and chosen <= set(range(1, 201))
    assert sample(50, 42) == chosen and sample(50, 7) != chosen
    assert sample(500, 42) == set(range(1, 201)) and scored_users(held_out, 0, 42) is held_out


def test_served_lists_fall_back_to_global_popular(spark):
    """A user without a list gets the global popular list, flagged as a fallback."""
    candidates = spark.createDataFrame([
        ("user", "1", "als", [5, 6], [0.9, 0.1], "v"), ("global", "all", "popular", [7, 8], [2.0, 1.0], "v"),
    ], spark_schema(CANDIDATES))
    users = spark.createDataFrame([(1,), (2,)], "user_id long")
    served = {(r.algorithm, r.user_id): (list(r.product_ids), r.fallback)
              for r in served_lists(candidates, users, ("als", BASELINE)).collect()}
    assert served == {("als", 1): ([5, 6], False), ("als", 2): ([7, 8], True),
                      (BASELINE, 1): ([7, 8], False), (BASELINE, 2): ([7, 8], False)}


def test_a_blend_scoring_below_its_parts_does_not_lead_the_preference():
    """The demo data's case: the hybrid scored below ALS and popular, so it comes last."""
    results = [("hybrid", "all", "ndcg@10", 0.18, 90), ("als", "all", "ndcg@10", 0.30, 90),
               ("popular", "all", "ndcg@10", 0.32, 90), (BASELINE, "all", "ndcg@10", 0.40, 90),
               ("als", "all", "recall@10", 0.9, 90), ("als", "heavy", "ndcg@10", 0.5, 9)]
    policy = policy_from_results(results, "r", AS_OF)
    assert policy["preference"] == ["popular", "als", "hybrid"]
    assert policy["best"] == {"all": "popular", "heavy": "als"}
    assert policy["baseline"] == {"all": 0.40}


def test_popularity_evaluation_matches_hand_computation(spark, rows):
    """Metrics of the popular lists equal ranking_metrics on the same lists; the policy names them."""
    products = spark.createDataFrame([(p, "c", 1.0, True, None, None, AS_OF) for p in (10, 11, 12, 13, 14)],
                                     spark_schema(PRODUCTS_STORED))
    settings = load_conf("jobs")
    params = EvaluationParams(holdout_days=2, ks=(2,), algorithms=("popular",), light_max_interactions=2)
    frame, policy, ranker = evaluate(spark, rows, products, AS_OF, settings, params, run_id="t")
    assert ranker is None  # ranked was not asked for
    results = {(r.algorithm, r.segment, r.metric): r.value for r in frame.collect()}
    # Every scored user has a per-user popular list or the global one; recompute recall@2 for "all".
    split = temporal_split(rows, AS_OF, params)
    assert results[("popular", "all", "hit_rate@2")] <= 1.0
    assert results[("popular", "new", "recall@2")] == ranking_metrics(
        _global_popular(spark, split, products, settings), [10], 2)["recall"]
    assert set(policy["priors"]) == {"all", "new", "light", "heavy"} and policy["best"]["all"] == "popular"
    assert policy["preference"] == ["popular"]
    assert all(BASELINE not in scores for scores in policy["priors"].values())  # not a served algorithm
    assert (BASELINE, "all", "ndcg@2") in results
    assert json.loads(json.dumps(policy)) == policy
    assert ("popular", "all", "fallback_share") in results


def _global_popular(spark, split, products, settings):
    from jobs import popularity
    lists = popularity.popularity_candidates(split.train, products, split.train_until,
                                             popularity.params_from_settings(settings["popularity"]))
    return list(lists.where("subject_kind = 'global'").first().product_ids)


def test_params_reject_bad_values():
    """Unknown split, non-positive hold-out, bad k, no popular fallback, bad test share, k-core or sample size raise."""
    for bad in ({"split": "bogus"}, {"holdout_days": 0}, {"ks": (0,)}, {"algorithms": ("als",)},
                {"test_fraction": 1.0}, {"min_interactions": -1}, {"max_scored_users": -1}):
        with pytest.raises(ValueError):
            EvaluationParams(**bad)


def test_lists_for_the_scored_users_only_are_the_lists_of_a_run_for_everyone(spark):
    """train_all(for_users=...) leaves the other users' lists out and changes none of
    the kept ones: every model still learns from all the training rows."""
    import random

    from jobs.evaluation import train_all

    draw = random.Random(5)
    categories = ["shoes.run", "shoes.trail", "books.sf", "books.crime"]
    products = spark.createDataFrame(
        [(p, categories[p % 4], float(10 + p), True, {"brand": f"b{p % 3}"}, None, AS_OF) for p in range(1, 41)],
        spark_schema(PRODUCTS_STORED))
    train = spark.createDataFrame(
        [(u, draw.randint(1, 40), draw.choice(["view", "view", "add_to_cart", "purchase"]), day(draw.uniform(1, 20)))
         for u in range(1, 61) for _ in range(draw.randint(2, 12))], ROWS)
    settings = load_conf("jobs")
    settings["als"] = {**settings["als"], "rank": 4, "max_iter": 3}
    algorithms = ("popular", "als", "content")  # hybrid fuses these lists: the same in, the same out
    scored = spark.createDataFrame([(u,) for u in range(1, 61, 4)], "user_id long")

    def user_lists(for_users):
        lists, _ = train_all(train, products, AS_OF, settings, algorithms, for_users=for_users)
        return {(r.algorithm, int(r.subject_id)): (list(r.product_ids), [round(s, 5) for s in r.scores])
                for r in lists.where("subject_kind = 'user'").collect()}

    everyone, some = user_lists(None), user_lists(scored)
    kept = {u for u in range(1, 61, 4)}
    assert {algorithm for algorithm, _ in some} == set(algorithms)
    assert {user for _, user in some} <= kept
    assert some == {key: lists for key, lists in everyone.items() if key[1] in kept}
