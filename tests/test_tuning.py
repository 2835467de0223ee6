"""Tuning: the search space, the winner, the tuned settings overlay, and no peeking at the test part."""
from __future__ import annotations

import json
import math
import time
from datetime import datetime, timedelta, timezone

import optuna
import pytest

from jobs.als import AlsParams
from jobs.ease import EaseParams
from jobs.evaluation import EvaluationParams, temporal_split
from jobs.hybrid import HybridParams
from jobs.tuned import TUNED_FILE, with_tuned, write_json_atomically
from jobs import tuning
from jobs.ranked import RankedParams
from jobs.tuning import (
    Trial, TuningParams, als_fixed, best_trial, hybrid_fixed, open_study, run_trials, suggest_als, suggest_ease,
    suggest_hybrid, suggest_ranked, tune, tuned_als_settings, tuned_document, tuned_ease_settings,
    tuned_ranked_settings, validation_split,
)

AS_OF = datetime(2026, 10, 10, tzinfo=timezone.utc)


def _drawn_als(study, base, params, n):
    """n trials of ``study`` (conf's first), each scored by closeness to reg 0.1: the AlsParams drawn."""
    drawn = []

    def objective(trial):
        drawn.append(suggest_als(trial, base, params))
        return -abs(math.log(drawn[-1].reg_param / 0.1))

    study.enqueue_trial(als_fixed(base))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=n)
    return drawn


def test_als_trials_start_with_conf_then_draw_within_the_ranges():
    base = AlsParams(rank=32, max_iter=10, reg_param=0.05, alpha=10.0)
    params = TuningParams(max_trials=12, rank=(8, 16), max_iter=(5, 6), reg_param=(1e-3, 10.0), alpha=(1.0, 2.0),
                          event_weight_sets={"flat": {"view": 1.0, "purchase": 1.0}})
    drawn = _drawn_als(open_study("als", params, None, "temporal"), base, params, 12)
    assert drawn[0] == base
    for t in drawn[1:]:
        assert 8 <= t.rank <= 16 and 5 <= t.max_iter <= 6 and 1e-3 <= t.reg_param <= 10 and 1 <= t.alpha <= 2
        assert t.event_weights in (dict(base.event_weights), {"view": 1.0, "purchase": 1.0})
        assert (t.top_n, t.seed, t.half_life_days) == (base.top_n, base.seed, base.half_life_days)
    assert len({json.dumps(tuned_als_settings(t), sort_keys=True) for t in drawn}) == len(drawn)
    # Seeded: a fresh study draws the same configurations.
    assert _drawn_als(open_study("als", params, None, "temporal"), base, params, 12) == drawn


def test_studies_persist_and_a_later_run_continues_them(tmp_path):
    """Stored in SQLite, a study opened again holds the earlier trials, and the new ones add to them;
    another search space is another study."""
    storage = f"sqlite:///{tmp_path / 'tuning.db'}"
    base, params = AlsParams(), TuningParams(rank=(8, 64))
    _drawn_als(open_study("als", params, storage, "random"), base, params, 3)
    again = open_study("als", params, storage, "random")
    assert len(again.trials) == 3
    _drawn_als(again, base, params, 2)
    assert len(open_study("als", params, storage, "random").trials) == 5
    assert len(open_study("als", TuningParams(rank=(8, 32)), storage, "random").trials) == 0


def test_hybrid_weights_cover_ease_and_trial_0_is_conf():
    base = HybridParams(weights={"als": 1.0, "content": 0.5, "popular": 0.3})
    params = TuningParams()
    assert hybrid_fixed(base, params) == {"weight_als": 1.0, "weight_content": 0.5, "weight_ease": 0.0,
                                          "weight_popular": 0.3}
    study = open_study("hybrid", params, None, "temporal")
    drawn = []
    study.enqueue_trial(hybrid_fixed(base, params))
    study.optimize(lambda trial: drawn.append(suggest_hybrid(trial, base, params)) or 0.0, n_trials=6)
    assert drawn[0] == {**base.weights, "ease": 0.0}
    assert all(set(w) == {"als", "content", "ease", "popular"} and all(0 <= v <= 1 for v in w.values())
               for w in drawn)


def test_ranker_trials_start_with_conf_then_draw_within_the_ranges():
    base = RankedParams(num_leaves=31, learning_rate=0.05, min_data_in_leaf=50, feature_fraction=0.9)
    params = TuningParams(ranked_num_leaves=(7, 15), ranked_learning_rate=(0.02, 0.1),
                          ranked_min_data_in_leaf=(5, 20), ranked_feature_fraction=(0.6, 0.8))
    study = open_study("ranked", params, None, "temporal")
    study.enqueue_trial(tuned_ranked_settings(base))
    drawn = []
    study.optimize(lambda trial: drawn.append(suggest_ranked(trial, base, params)) or 0.0, n_trials=8)
    assert drawn[0] == base
    for p in drawn[1:]:
        assert 7 <= p.num_leaves <= 15 and 0.02 <= p.learning_rate <= 0.1 and 5 <= p.min_data_in_leaf <= 20
        assert 0.6 <= p.feature_fraction <= 0.8 and (p.depth, p.generators) == (base.depth, base.generators)


def test_run_trials_stops_at_max_trials_and_before_overrunning_the_budget(monkeypatch):
    """Trial 0 always runs; no trial starts when the mean trial time would pass the deadline."""
    monkeypatch.setattr(tuning, "score_lists", lambda candidates, algorithm, validation: ({"ndcg@10": 0.1}, 5))
    base = EaseParams()
    params = TuningParams(max_trials=4)

    def fit(trial):
        time.sleep(0.2)
        p = suggest_ease(trial, base, params)
        return None, tuned_ease_settings(p)

    every = run_trials(open_study("ease", params, None, "temporal"), "ease", tuned_ease_settings(base), fit, None,
                       params, deadline=time.monotonic() + 60)
    assert [t.number for t in every] == [0, 1, 2, 3] and every[0].params == {"l2": base.l2, "value": base.value}
    late = run_trials(open_study("ease", params, None, "temporal"), "ease", tuned_ease_settings(base), fit, None,
                      params, deadline=time.monotonic() + 0.3)
    assert len(late) == 1  # conf's trial ran; the next would have ended after the deadline


def test_best_trial_prefers_the_score_then_conf():
    params = TuningParams()

    def trial(number, ndcg):
        return Trial("als", number, {"n": number}, {"ndcg@10": ndcg}, 10, 1.0)

    assert best_trial([trial(0, 0.1), trial(1, 0.3), trial(2, 0.2)], params).number == 1
    assert best_trial([trial(0, 0.2), trial(1, 0.2)], params).number == 0


def test_tuned_document_names_winners_and_keeps_every_trial():
    trials = {"als": [Trial("als", 0, {"rank": 32}, {"ndcg@10": 0.1}, 5, 2.0),
                      Trial("als", 1, {"rank": 16}, {"ndcg@10": 0.2}, 5, 1.5)],
              "hybrid": [Trial("hybrid", 0, {"weights": {"als": 1.0}}, {"ndcg@10": 0.15}, 5, 0.5)]}
    document = tuned_document(trials, "tuning-x", AS_OF, TuningParams())
    assert document["settings"] == {"als": {"rank": 16}, "hybrid": {"weights": {"als": 1.0}}}
    assert document["scores"]["als"] == {"conf": 0.1, "best": 0.2, "best_trial": 1, "trials": 2}
    assert len(document["trials"]) == 3 and json.loads(json.dumps(document)) == document


def test_with_tuned_lays_only_tuned_sections_over_conf(tmp_path):
    settings = {"als": {"rank": 32, "top_n": 200}, "hybrid": {"weights": {"als": 1.0}, "rrf_k": 60},
                "popularity": {"top_n": 10}, "tuning": {"use_tuned": True}}
    assert with_tuned(settings, tmp_path) == settings  # no file yet
    write_json_atomically(tmp_path / TUNED_FILE, {"run_id": "t", "settings": {
        "als": {"rank": 16}, "hybrid": {"weights": {"als": 0.5, "content": 1.0}}, "popularity": {"top_n": 1}}})
    merged = with_tuned(settings, tmp_path)
    assert merged["als"] == {"rank": 16, "top_n": 200}
    assert merged["hybrid"] == {"weights": {"als": 0.5, "content": 1.0}, "rrf_k": 60}
    assert merged["popularity"] == {"top_n": 10}  # not a tuned section
    assert settings["als"]["rank"] == 32  # conf itself untouched
    assert with_tuned({**settings, "tuning": {"use_tuned": False}}, tmp_path)["als"]["rank"] == 32


def test_with_tuned_ignores_an_unreadable_file(tmp_path):
    (tmp_path / TUNED_FILE).parent.mkdir(parents=True)
    (tmp_path / TUNED_FILE).write_text("{not json")
    settings = {"als": {"rank": 32}}
    assert with_tuned(settings, tmp_path) == settings


def test_params_reject_bad_values():
    for bad in ({"budget_minutes": 0}, {"max_trials": 0}, {"metric": "auc"}, {"rank": (0, 8)},
                {"reg_param": (1.0, 0.1)}, {"hybrid_weight": (0.0, 0.0)}, {"als_budget_share": 1.5},
                {"als_budget_share": 0.7, "ease_budget_share": 0.5},
                {"als_budget_share": 0.5, "ease_budget_share": 0.2, "ranked_budget_share": 0.4},
                {"ranked_feature_fraction": (0.5, 1.5)}, {"ranked_num_leaves": (0, 31)}):
        with pytest.raises(ValueError):
            TuningParams(**bad)


@pytest.mark.spark
def test_validation_split_never_reads_the_test_part(spark):
    """The validation part is the hold-out window just before the test period; a product
    seen only in the test period appears in neither validation training nor its targets."""
    def day(n: float) -> datetime:
        return AS_OF - timedelta(days=n)

    rows = spark.createDataFrame([
        (1, 10, "view", day(9)), (1, 11, "view", day(3)), (1, 99, "view", day(1)),
        (2, 10, "view", day(8)), (2, 12, "view", day(2.5)), (2, 99, "purchase", day(0.5)),
        (3, 11, "view", day(7)), (3, 13, "view", day(6)),
    ], "user_id long, product_id long, event_type string, timestamp timestamp")
    params = EvaluationParams(holdout_days=2)
    outer = temporal_split(rows, AS_OF, params)
    inner = validation_split(rows, AS_OF, params)
    assert outer.train_until == day(2) and inner.train_until == day(4)
    train_products = {r.product_id for r in inner.train.collect()}
    held = {r.user_id: sorted(r.relevant) for r in inner.held_out.collect()}
    assert train_products == {10, 11, 13}
    assert held == {1: [11], 2: [12]}
    assert 99 not in train_products and all(99 not in v for v in held.values())


@pytest.mark.spark
def test_poisoning_the_test_part_changes_no_trial_and_no_winner(spark):
    """Tuned twice on the same generated events, the second time with the test period
    rewritten (every event in it a purchase of one product): every trial of every
    algorithm, ranker included, scores the same and the same parameters win."""
    import numpy as np
    import pyarrow as pa
    from pyspark.sql import functions as F

    from jobs import generate_data as gd
    from jobs.loaders import evaluation_frames
    from schemas.settings import load_conf
    from schemas.tables import EVENT_TYPES

    world = gd.build_world(users=400, products=150, seed=3, start="2026-09-30", days=10)
    columns = gd.generate_event_chunk(world, 15_000, world.start_ts, world.end_ts, np.random.default_rng(3))
    events = spark.createDataFrame(pa.table({
        "user_id": columns["user_id"], "product_id": columns["product_id"],
        "event_type": np.array(EVENT_TYPES, dtype=object)[columns["event_type"]],
        "timestamp": gd.iso_utc(columns["timestamp"]).astype(object)}))
    rows, products = evaluation_frames(events, spark.createDataFrame(gd.products_table(world.catalog)))
    evaluation = EvaluationParams(holdout_days=2)
    test_starts = AS_OF - timedelta(days=2)
    in_test = F.col("timestamp") >= F.lit(test_starts)
    poisoned = rows.select("user_id", F.when(in_test, F.lit(int(world.catalog.product_id[0])))
                           .otherwise(F.col("product_id")).alias("product_id"),
                           F.when(in_test, F.lit("purchase")).otherwise(F.col("event_type")).alias("event_type"),
                           "timestamp")
    assert poisoned.where(in_test).count() > 1000  # the test part is there, and rewritten
    settings = load_conf("jobs")
    params = TuningParams(max_trials=2, budget_minutes=30.0, ease_l2=(1.0, 1000.0))

    def searched(frame):
        trials = tune(frame, products, AS_OF, settings, evaluation, params)
        return ({name: [(t.params, t.metrics) for t in group] for name, group in trials.items()},
                tuned_document(trials, "r", AS_OF, params)["settings"])

    clean, chosen = searched(rows)
    assert set(clean) == {"als", "ease", "ranked", "hybrid"} and all(len(group) == 2 for group in clean.values())
    assert clean["ranked"][0][1]["ndcg@10"] > 0
    assert searched(poisoned) == (clean, chosen)
