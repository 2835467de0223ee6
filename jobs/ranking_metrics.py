"""Top-k ranking metrics for one user, in plain Python (checked by hand in tests),
applied to Spark frames by ``jobs.evaluation``.

Binary relevance throughout: a recommended product is relevant when it is in the
user's held-out set. Definitions:

- hit_rate@k  1 when any of the first k is relevant, else 0
- recall@k    relevant among the first k / number of relevant (all of them)
- precision@k relevant among the first k / k
- ndcg@k      DCG of the first k (gain 1/log2(rank+1)) / DCG of an ideal list of
              min(k, |relevant|) relevant items
- map@k       mean over relevant positions i <= k of precision@i, divided by
              min(k, |relevant|) (the usual AP@k normalisation)
- mrr         1 / rank of the first relevant item in the whole list (0 if none)
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

METRICS = ("hit_rate", "recall", "precision", "ndcg", "map")


def ranking_metrics(recommended: Sequence[int], relevant: Iterable[int], k: int) -> dict[str, float]:
    """The metrics above at cut-off ``k`` for one user; ``relevant`` must not be empty."""
    relevant = set(relevant)
    if not relevant:
        raise ValueError("a user without held-out items cannot be scored")
    if k < 1:
        raise ValueError("k must be at least 1")
    top = list(recommended[:k])
    hits = [product in relevant for product in top]
    n_hits = sum(hits)
    dcg = sum(1.0 / math.log2(rank + 2) for rank, hit in enumerate(hits) if hit)
    ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(k, len(relevant))))
    precisions, seen = [], 0
    for rank, hit in enumerate(hits, start=1):
        if hit:
            seen += 1
            precisions.append(seen / rank)
    return {
        "hit_rate": 1.0 if n_hits else 0.0,
        "recall": n_hits / len(relevant),
        "precision": n_hits / k,
        "ndcg": dcg / ideal,
        "map": sum(precisions) / min(k, len(relevant)),
    }


def reciprocal_rank(recommended: Sequence[int], relevant: Iterable[int]) -> float:
    relevant = set(relevant)
    for rank, product in enumerate(recommended, start=1):
        if product in relevant:
            return 1.0 / rank
    return 0.0
