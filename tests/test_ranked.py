"""The ranking stage: LightGBM learns what decides the label, the model file is checked
before use, and the Spark scoring keeps the candidates contract."""
from __future__ import annotations

import os
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from jobs import ranked
from jobs.ranked import (RankedParams, RankerModel, RankerModelError, check_features, fit_booster, load_model,
                         query_groups, ranked_lists, save_model)
from jobs.ranking_metrics import ranking_metrics
from schemas import CANDIDATES, PRODUCTS_STORED, spark_schema
from tests.candidate_contract import assert_candidates_contract

AS_OF = datetime(2026, 10, 10, tzinfo=timezone.utc)
PARAMS = RankedParams(generators=("popular", "als"), depth=5, top_n=4, min_data_in_leaf=5, num_boost_round=60,
                      early_stopping_rounds=60, product_features=("brand",))
FEATURES = list(PARAMS.spec.names)


def synthetic_frame(users: int, seed: int) -> pd.DataFrame:
    """20 candidates per user, every feature noise but ``trend``: the two with the largest
    trend are bought (3), the next three viewed (1), the rest untouched (0)."""
    rng = np.random.default_rng(seed)
    n = users * 20
    frame = pd.DataFrame(rng.normal(size=(n, len(FEATURES))), columns=FEATURES)
    frame["product_brand"] = rng.integers(0, 5, size=n).astype(float)
    frame.insert(0, "user_id", np.repeat(np.arange(users, dtype=np.int64), 20))
    frame.insert(1, "product_id", np.tile(np.arange(20, dtype=np.int64), users))
    order = frame.groupby("user_id")["trend"].rank(ascending=False, method="first")
    frame["label"] = np.select([order <= 2, order <= 5], [3, 1], 0)
    return frame


def ndcg_at_10(frame: pd.DataFrame, scores: np.ndarray) -> float:
    frame = frame.assign(score=scores).sort_values(["user_id", "score"], ascending=[True, False])
    lists = frame.groupby("user_id")["product_id"].apply(list)
    relevant = frame[frame["label"] > 0].groupby("user_id")["product_id"].apply(list)
    values = [ranking_metrics(lists[u], set(relevant[u]), 10)["ndcg"] for u in lists.index]
    return float(np.mean(values))


@pytest.fixture(scope="module")
def learned():
    booster, trained = fit_booster(synthetic_frame(300, seed=1), FEATURES, ["product_brand"], PARAMS)
    return RankerModel(booster, FEATURES, ["product_brand"], {"product_brand": ["a", "b"]}, "ranked-test", trained)


def test_the_feature_that_decides_the_label_is_learned(learned):
    """On users it never saw, the ranking is near perfect and the deciding feature leads by gain."""
    fresh = synthetic_frame(200, seed=2)
    ndcg = ndcg_at_10(fresh, learned.booster.predict(fresh[FEATURES].to_numpy()))
    assert ndcg > 0.95, ndcg
    importance = learned.importance()
    assert next(iter(importance)) == "trend", importance
    assert importance["trend"] > 5 * sum(v for k, v in importance.items() if k != "trend")
    assert learned.trained["validation_users"] > 0 and learned.trained["rows"] == 6000


def test_no_labelled_candidate_is_a_clear_error():
    frame = synthetic_frame(10, seed=3).assign(label=0)
    with pytest.raises(ValueError, match="no training candidate was followed by a labelled event"):
        fit_booster(frame, FEATURES, [], PARAMS)


def test_query_groups_are_runs_of_one_user():
    assert query_groups(np.array([4, 4, 7, 9, 9, 9])).tolist() == [2, 1, 3]
    assert query_groups(np.array([], dtype=np.int64)).tolist() == []


def test_params_refuse_what_lightgbm_cannot_use():
    with pytest.raises(ValueError, match="generators"):
        RankedParams(generators=("hybrid",))
    with pytest.raises(ValueError, match="label_grades"):
        RankedParams(label_grades={"view": 1.5})
    with pytest.raises(ValueError, match="event_weights"):
        RankedParams(event_weights={"glance": 1.0})
    with pytest.raises(ValueError, match="label_split"):
        RankedParams(label_split="next_week")


@pytest.mark.spark
def test_label_splits_hold_out_the_last_days_or_a_share_of_each_users_products(spark):
    """temporal: what happened in the last label_days is the label and unseen; random: a
    seeded quarter of each user's graded products, all of their rows unseen, the rest seen."""
    def day(n: float) -> datetime:
        return AS_OF - timedelta(days=n)

    rows = spark.createDataFrame(
        [(u, 100 + p, "purchase" if p % 3 == 0 else "view", day(9 - p * 0.75)) for u in (1, 2) for p in range(12)]
        + [(1, 105, "view", day(8.9)), (3, 200, "view", day(0.2))],
        "user_id long, product_id long, event_type string, timestamp timestamp")
    temporal = ranked.label_split(rows, AS_OF, replace(PARAMS, label_days=2.0))
    assert temporal.clock == day(2)
    assert {(r.user_id, r.product_id, r.label) for r in temporal.labels.collect()} == {
        (1, 110, 1), (1, 111, 1), (2, 110, 1), (2, 111, 1), (3, 200, 1)}  # 109 at day 2.25 is seen
    assert temporal.before.where(f"timestamp >= '{day(2).isoformat()}'").count() == 0
    random = ranked.label_split(rows, AS_OF, replace(PARAMS, label_split="random", label_share=0.25))
    held = {(r.user_id, r.product_id): r.label for r in random.labels.collect()}
    assert random.clock == AS_OF
    assert sorted(u for u, _ in held) == [1, 1, 1, 2, 2, 2]  # floor(12 / 4) each; user 3's single product stays seen
    assert all(label == (3 if (p - 100) % 3 == 0 else 1) for (_, p), label in held.items())
    seen = {(r.user_id, r.product_id) for r in random.before.collect()}
    assert not seen & set(held) and len(seen) == 2 * 12 - 6 + 1
    assert ranked.labelled_users(random, PARAMS).count() == 2


class TestModelFile:
    def test_saved_model_scores_the_same_when_loaded(self, learned, tmp_path):
        folder = save_model(learned, tmp_path)
        assert (folder / "model.txt").read_text().startswith("tree")  # LightGBM's text format, no pickle
        loaded = load_model(folder)
        values = synthetic_frame(5, seed=4)[FEATURES].to_numpy()
        np.testing.assert_allclose(loaded.booster.predict(values), learned.booster.predict(values))
        assert loaded.vocabularies == learned.vocabularies and loaded.version == "ranked-test"

    def test_corrupt_model_file_is_one_clear_line(self, learned, tmp_path):
        folder = save_model(learned, tmp_path)
        (folder / "model.txt").write_text("tree\nversion=v4\nnum_class=oops\n")
        with pytest.raises(RankerModelError, match="model.txt unreadable") as raised:
            load_model(folder)
        assert "\n" not in str(raised.value)

    def test_feature_list_not_the_models_is_refused(self, learned, tmp_path):
        folder = save_model(learned, tmp_path)
        (folder / "features.json").write_text((folder / "features.json").read_text().replace('"trend"', '"trendy"'))
        with pytest.raises(RankerModelError, match="has features"):
            load_model(folder)

    def test_features_this_configuration_does_not_compute_are_refused(self, learned):
        with pytest.raises(RankerModelError, match=r"configuration only: \['ease_rank', 'ease_score'\]"):
            check_features(learned, replace(PARAMS, generators=("popular", "als", "ease")).spec)

    def test_job_with_a_corrupt_model_stops_and_leaves_the_candidates(self, learned, tmp_path, caplog):
        folder = save_model(learned, tmp_path / "models")
        (folder / "model.txt").write_bytes(b"\x00garbage")
        data = tmp_path / "data"
        assert ranked.main(["--data-dir", str(data), "--model", str(folder), "--log-level", "ERROR"]) == 1
        assert "model.txt unreadable" in caplog.text and "unchanged" in caplog.text
        assert not (data / "lake").exists()  # nothing was read, nothing written


class TestReuse:
    """A saved model is reused while it is young enough and trained on the same settings."""

    @staticmethod
    def saved(learned, models_dir, trained_at: datetime, params: RankedParams = PARAMS, name: str = "m"):
        model = replace(learned, version=f"ranked-{name}", trained={
            **learned.trained, "as_of": trained_at.isoformat(), "settings": ranked.settings_digest(params)})
        return save_model(model, models_dir)

    def test_a_young_model_on_these_settings_is_reused(self, learned, tmp_path):
        self.saved(learned, tmp_path, AS_OF - timedelta(days=3))
        assert ranked.reusable_model(tmp_path, AS_OF, PARAMS).version == "ranked-m"

    def test_an_old_a_future_or_an_other_settings_model_is_not(self, learned, tmp_path):
        self.saved(learned, tmp_path, AS_OF - timedelta(days=3))
        assert ranked.reusable_model(tmp_path, AS_OF + timedelta(days=5), PARAMS) is None  # 8 days old
        assert ranked.reusable_model(tmp_path, AS_OF - timedelta(days=4), PARAMS) is None  # its labels lie ahead
        assert ranked.reusable_model(tmp_path, AS_OF, replace(PARAMS, num_leaves=7)) is None
        assert ranked.reusable_model(tmp_path, AS_OF, replace(PARAMS, retrain_days=0)) is None
        # The cadence is not a setting of the model: a shorter one still reuses it.
        assert ranked.reusable_model(tmp_path, AS_OF, replace(PARAMS, retrain_days=3)).version == "ranked-m"

    def test_an_unreadable_newest_model_falls_back_to_the_one_before(self, learned, tmp_path, caplog):
        self.saved(learned, tmp_path, AS_OF - timedelta(days=2), name="older")
        broken = self.saved(learned, tmp_path, AS_OF - timedelta(days=1), name="newer")
        (broken / "model.txt").write_bytes(b"\x00garbage")
        os.utime(broken / "model.txt", (time.time() + 60, time.time() + 60))
        assert ranked.reusable_model(tmp_path, AS_OF, PARAMS).version == "ranked-older"
        assert "model.txt unreadable" in caplog.text and "not reused" in caplog.text

    def test_a_new_model_records_its_clock_and_settings(self):
        model = ranked.model_from_rows(synthetic_frame(40, seed=5), {"product_brand": []}, AS_OF, PARAMS)
        assert model.trained["as_of"] == AS_OF.isoformat()
        assert model.trained["settings"] == ranked.settings_digest(PARAMS)


@pytest.fixture(scope="module")
def lists(spark, learned):
    """``ranked_lists`` of three users' hand-made generator lists, by user, contract-checked."""
    day = lambda n: AS_OF - timedelta(days=n)  # noqa: E731
    rows = spark.createDataFrame([(1, 10, "view", day(3)), (1, 11, "purchase", day(2)),
                                  (2, 12, "view", day(1)), (3, 10, "view", day(1))],
                                 "user_id long, product_id long, event_type string, timestamp timestamp")
    products = spark.createDataFrame(
        [(p, "a.b", 10.0 * p, True, {"brand": "a"}, day(30), day(30)) for p in (10, 11, 12, 13, 14)],
        spark_schema(PRODUCTS_STORED))
    candidates = spark.createDataFrame([
        ("user", "1", "popular", [10, 12, 13, 14], [4.0, 3.0, 2.0, 1.0], "p"),
        ("user", "1", "als", [99, 12, 10], [0.9, 0.5, 0.1], "a"),   # 99: in no catalog, never seen
        ("user", "2", "als", [10, 13], [0.4, 0.3], "a"),
        ("user", "2", "content", [11], [0.9], "c"),                  # not a generator of this model
        ("product", "10", "als", [11], [0.5], "a"),
        ("global", "all", "popular", [10, 11], [2.0, 1.0], "p"),
    ], spark_schema(CANDIDATES))
    return {int(r["subject_id"]): r for r in assert_candidates_contract(
        ranked_lists(candidates, rows, products, None, AS_OF, learned, PARAMS))}


@pytest.mark.spark
class TestScoringOnSpark:
    def test_every_user_with_candidates_gets_a_ranked_list_of_them(self, lists):
        assert sorted(lists) == [1, 2]
        assert {r["algorithm"] for r in lists.values()} == {"ranked"}
        assert {r["model_version"] for r in lists.values()} == {"ranked-test"}
        assert len(lists[1]["product_ids"]) == 4  # top_n of the five candidates
        assert set(lists[1]["product_ids"]) <= {10, 12, 13, 14, 99}
        assert sorted(lists[2]["product_ids"]) == [10, 13]  # content's 11 is not this model's input

    def test_a_product_without_features_is_still_ranked(self, spark, learned):
        """99 has no catalog row and no events; with top_n 5 it is listed with a finite score."""
        assert 99 in ranked_lists_for_user_1(spark, learned)


def ranked_lists_for_user_1(spark, learned) -> list[int]:
    rows = spark.createDataFrame([(1, 10, "view", AS_OF - timedelta(days=1))],
                                 "user_id long, product_id long, event_type string, timestamp timestamp")
    products = spark.createDataFrame([(10, "a.b", 5.0, True, {}, AS_OF, AS_OF)], spark_schema(PRODUCTS_STORED))
    candidates = spark.createDataFrame([("user", "1", "als", [99, 10], [0.9, 0.1], "a")], spark_schema(CANDIDATES))
    row = ranked_lists(candidates, rows, products, None, AS_OF, learned, replace(PARAMS, top_n=5)).first()
    return list(row["product_ids"])
