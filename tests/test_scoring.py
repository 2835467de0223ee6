"""Scoring every algorithm in one pass (jobs.scoring) against the same figures computed
user by user in plain Python."""
from __future__ import annotations

import math
import random
from collections import Counter, defaultdict

import numpy as np
import pytest

from jobs.ranking_metrics import METRICS, ranking_metrics, reciprocal_rank
from jobs.scoring import ALL_USERS, BASELINE, ProductShares, score, self_information

pytestmark = pytest.mark.spark

KS = (2, 5)
ALGORITHMS = ("als", "content", BASELINE)


def _case(seed: int = 3):
    """Served lists (some empty-handed users get the fallback), held-out sets, segments and training rows."""
    rng = random.Random(seed)
    users = list(range(1, 81))
    segments = {u: rng.choice(("new", "light", "heavy")) for u in users}
    held_out = {u: sorted(rng.sample(range(30), rng.randint(1, 4))) for u in users}
    popular = rng.sample(range(30), 8)
    served = []
    for algorithm in ALGORITHMS:
        for u in users:
            if algorithm != BASELINE and rng.random() < 0.8:
                served.append((algorithm, u, rng.sample(range(40), rng.randint(1, 9)), False))
            else:
                served.append((algorithm, u, popular, algorithm != BASELINE))
    train = [rng.randrange(35) for _ in range(300)]  # products 35..39 are never trained on
    return served, held_out, segments, train


def _expected(served, held_out, segments, train, catalog_size):
    counts, rows = Counter(train), len(train)
    values = defaultdict(list)
    shown, information, fallback = defaultdict(set), defaultdict(list), defaultdict(list)
    for algorithm, user, products, is_fallback in served:
        for segment in (segments[user], ALL_USERS):
            for k in KS:
                for metric, value in ranking_metrics(products, held_out[user], k).items():
                    values[(algorithm, segment, f"{metric}@{k}")].append(value)
            values[(algorithm, segment, "mrr")].append(reciprocal_rank(products, held_out[user]))
        top = products[:max(KS)]
        shown[algorithm].update(top)
        information[algorithm] += [-math.log2(counts[p] / rows if counts[p] else 1 / rows) for p in top]
        fallback[algorithm].append(float(is_fallback))
    expected = {key: (sum(v) / len(v), len(v)) for key, v in values.items()}
    for algorithm, flags in fallback.items():
        n = len(flags)
        expected[(algorithm, ALL_USERS, "fallback_share")] = (sum(flags) / n, n)
        expected[(algorithm, ALL_USERS, f"novelty@{max(KS)}")] = (sum(information[algorithm]) / len(information[algorithm]), n)
        expected[(algorithm, ALL_USERS, f"coverage@{max(KS)}")] = (len(shown[algorithm]) / catalog_size, n)
    return expected


def test_one_pass_equals_user_by_user_python(spark):
    """Means per segment and for all users, fallback share, novelty and coverage, with the
    users spread over several partitions so that partial sums are combined."""
    served, held_out, segments, train = _case()
    served_frame = spark.createDataFrame(
        served, "algorithm string, user_id long, product_ids array<bigint>, fallback boolean").repartition(3)
    held_out_frame = spark.createDataFrame(list(held_out.items()), "user_id long, relevant array<bigint>")
    segment_frame = spark.createDataFrame(list(segments.items()), "user_id long, segment string")
    ids, counts = np.unique(np.array(train), return_counts=True)
    shares = ProductShares(ids.astype(np.int64), counts / len(train), len(train))

    results = score(served_frame, held_out_frame, segment_frame, shares, KS, catalog_size=50)

    got = {(a, s, m): (v, n) for a, s, m, v, n in results}
    expected = _expected(served, held_out, segments, train, catalog_size=50)
    assert set(got) == set(expected)
    for key, (value, users) in expected.items():
        assert got[key][1] == users, key
        assert got[key][0] == pytest.approx(value, rel=1e-12, abs=1e-15), key
    assert {m.split("@")[0] for _, _, m in got} >= set(METRICS) | {"mrr", "fallback_share", "novelty", "coverage"}


def test_self_information_of_unseen_products_counts_them_as_one_row():
    shared = (np.array([3, 7], np.int64), np.array([0.25, 0.75]), 4)
    assert self_information(np.array([3, 7, 5, 9]), shared).tolist() == [2.0, -math.log2(0.75), 2.0, 2.0]
    assert self_information(np.array([1]), (np.array([], np.int64), np.array([]), 8)).tolist() == [3.0]
