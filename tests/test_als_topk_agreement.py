"""The job's blocked top-K lists what Spark ML's recommendForAllUsers lists, on one model
(the check behind bench/als_topk, on a tiny model)."""
from __future__ import annotations

import numpy as np
import pytest

from bench.als_topk.compare import blocked_lists, compare_lists, rfau_lists
from bench.als_topk.interactions import generate
from jobs import als

pytestmark = pytest.mark.spark


def test_blocked_top_k_equals_recommend_for_all_users(spark):
    """Same users, same ids in the same order (a swap only between equal scores), same scores."""
    users, items, ratings = generate(60, 40, 600, seed=3)
    frame = spark.createDataFrame(
        [(int(u), int(i), float(r)) for u, i, r in zip(users, items, ratings)], "user int, item int, rating float")
    params = als.AlsParams(rank=4, max_iter=2, top_n=7, exclude_purchased=False)
    model = als.fit_als(frame, params)

    ours, theirs = blocked_lists(spark, model, params), rfau_lists(model, params.top_n)

    assert np.array_equal(ours[0], theirs[0]) and len(ours[0]) == len(np.unique(users))
    result = compare_lists(ours, theirs)
    assert result["scores_disagree"] == 0, result
    assert result["identical"] + result["same_ids_other_order_ties"] + result["different_ids_ties"] == result["users"]
    assert result["identical"] >= result["users"] - 2, result  # ties are rare in random factors
