"""Hybrid: reciprocal-rank fusion of per-user lists."""
from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest

from jobs.hybrid import HybridParams, fuse_lists, fused_user_lists
from schemas import CANDIDATES, spark_schema
from tests.candidate_contract import assert_candidates_contract


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


@pytest.mark.spark
def test_rrf_scores_by_hand(candidates):
    """Each product scores sum(weight / (k + rank)) over the lists it appears in."""
    params = HybridParams(weights={"als": 1.0, "popular": 0.5, "content": 0.0}, rrf_k=10, top_n=10)
    got = lists(fused_user_lists(candidates, params, AS_OF))
    ids, scores = got["1"]
    expected = {10: 1 / 11, 11: 1 / 12, 12: 1 / 13 + 0.5 / 11, 13: 0.5 / 12}
    assert ids == sorted(expected, key=lambda p: -expected[p])
    assert scores == pytest.approx([expected[p] for p in ids], rel=1e-6)
    assert got["2"][0] == [13, 10]  # one source: its order is kept


@pytest.mark.spark
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


def reference_fusion(rows, rrf_k, top_n):
    """The definition, item by item: per row, sum weight / (k + rank) by product, best first."""
    out = []
    for row_lists in rows:
        scores = {}
        for weight, ids in row_lists:
            for position, product in enumerate(ids):
                scores[product] = scores.get(product, 0.0) + weight / (rrf_k + position + 1)
        out.append(sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:top_n])
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_vectorised_fusion_equals_the_definition(seed):
    """Many rows at once: rows without lists, repeated ids, equal scores, the top_n cut."""
    rng = np.random.default_rng(seed)
    rows = [[(float(rng.choice([0.3, 0.5, 1.0])), rng.integers(0, 30, rng.integers(0, 12)).tolist())
             for _ in range(rng.integers(0, 4))] for _ in range(200)]
    flat = [(r, w, ids) for r, row_lists in enumerate(rows) for w, ids in row_lists]
    lengths, ids, scores = fuse_lists(
        row_of_list=np.array([r for r, _, _ in flat], dtype=np.int64),
        list_weights=np.array([w for _, w, _ in flat]), list_lengths=np.array([len(i) for _, _, i in flat]),
        product_ids=np.array([p for _, _, i in flat for p in i], dtype=np.int64), rows=len(rows), rrf_k=5, top_n=7)
    ends = np.cumsum(lengths)
    got = [list(zip(ids[e - n:e].tolist(), scores[e - n:e].tolist())) for n, e in zip(lengths, ends)]
    expected = reference_fusion(rows, rrf_k=5, top_n=7)
    assert [[p for p, _ in row] for row in got] == [[p for p, _ in row] for row in expected]
    assert [s for row in got for _, s in row] == pytest.approx([s for row in expected for _, s in row])
