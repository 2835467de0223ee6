"""Hybrid: reciprocal-rank fusion of per-user lists."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from jobs.hybrid import HybridParams, fused_user_lists
from schemas import CANDIDATES, spark_schema
from tests.candidate_contract import assert_candidates_contract

pytestmark = pytest.mark.spark

AS_OF = datetime(2026, 10, 5, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def candidates(spark):
    rows = [
        ("user", "1", "als", [10, 11, 12], [0.9, 0.8, 0.1], "als-v"),
        ("user", "1", "popular", [12, 13], [5.0, 4.0], "popular-v"),
        ("user", "2", "popular", [13, 10], [5.0, 4.0], "popular-v"),
        ("product", "10", "als", [11], [0.5], "als-v"),             # not a user list: ignored
        ("user", "1", "content", [99], [1.0], "content-v"),        # weight 0 below: ignored
    ]
    return spark.createDataFrame(rows, spark_schema(CANDIDATES))


def lists(df):
    return {r.subject_id: (list(r.product_ids), list(r.scores)) for r in df.collect()}


def test_rrf_scores_by_hand(candidates):
    """Each product scores sum(weight / (k + rank)) over the lists it appears in."""
    params = HybridParams(weights={"als": 1.0, "popular": 0.5, "content": 0.0}, rrf_k=10, top_n=10)
    got = lists(fused_user_lists(candidates, params, AS_OF))
    ids, scores = got["1"]
    expected = {10: 1 / 11, 11: 1 / 12, 12: 1 / 13 + 0.5 / 11, 13: 0.5 / 12}
    assert ids == sorted(expected, key=lambda p: -expected[p])
    assert scores == pytest.approx([expected[p] for p in ids], rel=1e-6)
    assert got["2"][0] == [13, 10]  # one source: its order is kept


def test_top_n_and_contract(candidates):
    """Lists are cut at top_n and honour the candidates contract."""
    fused = fused_user_lists(candidates, HybridParams(weights={"als": 1.0, "popular": 1.0}, top_n=2), AS_OF)
    rows = assert_candidates_contract(fused)
    assert {r.algorithm for r in rows} == {"hybrid"} and all(len(r.product_ids) <= 2 for r in rows)
    assert rows[0].model_version.startswith("hybrid-20261005T000000Z-")


@pytest.mark.parametrize("bad", [{"weights": {}}, {"weights": {"als": -1.0}}, {"weights": {"als": 0.0}},
                                 {"weights": {"hybrid": 1.0}}, {"rrf_k": -1}, {"top_n": 0}])
def test_params_reject_bad_values(bad):
    """Empty, negative or all-zero weights, self-reference and bad sizes raise ValueError."""
    with pytest.raises(ValueError):
        HybridParams(**bad)
