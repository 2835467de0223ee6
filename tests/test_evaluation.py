"""Offline evaluation: splits without leakage, segments, served lists, metrics, policy."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from jobs.evaluation import (
    EvaluationParams, evaluate, leave_last_out_split, served_lists, temporal_split, user_segments,
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


def test_segments_by_training_interactions(rows):
    """No training rows is new; up to the threshold light; more heavy."""
    split = temporal_split(rows, AS_OF, EvaluationParams(holdout_days=2))
    segments = {r.user_id: r.segment for r in user_segments(
        split.train, split.held_out, EvaluationParams(light_max_interactions=2)).collect()}
    assert segments == {1: "light", 2: "new", 3: "heavy"}


def test_served_lists_fall_back_to_global_popular(spark):
    """A user without a list gets the global popular list, flagged as a fallback."""
    candidates = spark.createDataFrame([
        ("user", "1", "als", [5, 6], [0.9, 0.1], "v"), ("global", "all", "popular", [7, 8], [2.0, 1.0], "v"),
    ], spark_schema(CANDIDATES))
    users = spark.createDataFrame([(1,), (2,)], "user_id long")
    served = {r.user_id: (list(r.product_ids), r.fallback) for r in served_lists(candidates, users, "als").collect()}
    assert served == {1: ([5, 6], False), 2: ([7, 8], True)}


def test_popularity_evaluation_matches_hand_computation(spark, rows):
    """Metrics of the popular lists equal ranking_metrics on the same lists; the policy names them."""
    products = spark.createDataFrame([(p, "c", 1.0, True, None, AS_OF) for p in (10, 11, 12, 13, 14)],
                                     spark_schema(PRODUCTS_STORED))
    settings = load_conf("jobs")
    params = EvaluationParams(holdout_days=2, ks=(2,), algorithms=("popular",), light_max_interactions=2)
    frame, policy = evaluate(spark, rows, products, AS_OF, settings, params, run_id="t")
    results = {(r.algorithm, r.segment, r.metric): r.value for r in frame.collect()}
    # Every scored user has a per-user popular list or the global one; recompute recall@2 for "all".
    split = temporal_split(rows, AS_OF, params)
    assert results[("popular", "all", "hit_rate@2")] <= 1.0
    assert results[("popular", "new", "recall@2")] == ranking_metrics(
        _global_popular(spark, split, products, settings), [10], 2)["recall"]
    assert set(policy["priors"]) == {"all", "new", "light", "heavy"} and policy["best"]["all"] == "popular"
    assert json.loads(json.dumps(policy)) == policy
    assert ("popular", "all", "fallback_share") in results


def _global_popular(spark, split, products, settings):
    from jobs import popularity
    lists = popularity.popularity_candidates(split.train, products, split.train_until,
                                             popularity.params_from_settings(settings["popularity"]))
    return list(lists.where("subject_kind = 'global'").first().product_ids)


def test_params_reject_bad_values():
    """Unknown split, non-positive hold-out, bad k, no popular fallback, bad test share or k-core raise."""
    for bad in ({"split": "bogus"}, {"holdout_days": 0}, {"ks": (0,)}, {"algorithms": ("als",)},
                {"test_fraction": 1.0}, {"min_interactions": -1}):
        with pytest.raises(ValueError):
            EvaluationParams(**bad)
