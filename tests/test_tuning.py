"""Tuning: the search space, the winner, the tuned settings overlay, and no peeking at the test part."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from jobs.als import AlsParams
from jobs.evaluation import EvaluationParams, temporal_split
from jobs.hybrid import HybridParams
from jobs.tuned import TUNED_FILE, with_tuned, write_json_atomically
from jobs.tuning import (
    Trial, TuningParams, als_trial_params, best_trial, hybrid_trial_weights, tuned_als_settings,
    tuned_document, validation_split,
)

AS_OF = datetime(2026, 10, 10, tzinfo=timezone.utc)


def test_als_trials_start_with_conf_and_stay_distinct_and_on_the_grid():
    base = AlsParams(rank=32, max_iter=10, reg_param=0.05, alpha=10.0)
    params = TuningParams(max_trials=8, rank=(8, 16), max_iter=(5,), reg_param=(0.1, 1.0), alpha=(1.0,),
                          event_weight_sets={"flat": {"view": 1.0, "purchase": 1.0}})
    trials = als_trial_params(base, params)
    assert trials[0] == base
    # 2 ranks x 2 regs x 2 weight sets = 8 grid points, none equal to base: 7 fit beside it.
    assert len(trials) == 8
    keys = [json.dumps(tuned_als_settings(t), sort_keys=True) for t in trials]
    assert len(set(keys)) == len(keys)
    for t in trials[1:]:
        assert t.rank in (8, 16) and t.max_iter == 5 and t.reg_param in (0.1, 1.0) and t.alpha == 1.0
        assert t.event_weights in (dict(base.event_weights), {"view": 1.0, "purchase": 1.0})
        assert (t.top_n, t.seed, t.half_life_days) == (base.top_n, base.seed, base.half_life_days)
    assert als_trial_params(base, params) == trials  # seeded: the same order every run


def test_hybrid_trials_skip_weight_multiples():
    """RRF ranks the same under weights (1, 1, 1) and (0.5, 0.5, 0.5): only one of them is tried."""
    base = HybridParams(weights={"als": 1.0, "content": 1.0, "popular": 1.0})
    trials = hybrid_trial_weights(base, TuningParams(max_trials=100, hybrid_weight_grid=(0.0, 0.5, 1.0)))
    assert trials[0] == base.weights
    ratios = {tuple(sorted((k, v / max(w.values())) for k, v in w.items())) for w in trials}
    assert len(ratios) == len(trials)
    assert {"als": 0.5, "content": 0.5, "popular": 0.5} not in trials
    assert all(any(v > 0 for v in w.values()) for w in trials)
    # 3^3 - 1 non-zero points; of the 7 with all weights in {0, 1} and their 0.5 multiples, one each.
    assert len(trials) == 26 - 7


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
    for bad in ({"budget_minutes": 0}, {"max_trials": 0}, {"metric": "auc"}, {"rank": ()},
                {"hybrid_weight_grid": (0.0,)}, {"als_budget_share": 1.5}):
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
