"""Top-k ranking metrics for one user, in plain Python (checked by hand in tests), and
the same for many users at once with NumPy (checked against them to the last bit),
which ``jobs.evaluation`` applies to Spark frames.

Binary relevance throughout: a recommended product is relevant when it is in the
user's held-out set. Definitions:

- hit_rate@k  1 when any of the first k is relevant, else 0
- recall@k    relevant among the first k / number of relevant (all of them)
- precision@k relevant among the first k / k
- ndcg@k      DCG of the first k (gain 1/log2(rank+1)) / DCG of an ideal list of
              min(k, |relevant|) relevant items
- map@k       mean over relevant positions i <= k of precision@i, divided by
              min(k, |relevant|) (the usual AP@k normalisation)
- map_all@k   the same sum divided by |relevant|, all of them (as Microsoft
              Recommenders' map_at_k and the published tables that use it)
- mrr         1 / rank of the first relevant item in the whole list (0 if none)
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

METRICS = ("hit_rate", "recall", "precision", "ndcg", "map", "map_all")


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
        "map_all": sum(precisions) / len(relevant),
    }


def reciprocal_rank(recommended: Sequence[int], relevant: Iterable[int]) -> float:
    relevant = set(relevant)
    for rank, product in enumerate(recommended, start=1):
        if product in relevant:
            return 1.0 / rank
    return 0.0


def _gains(n: int) -> np.ndarray:
    """``1 / log2(rank + 2)`` for ranks ``0 .. n-1``, computed as ``ranking_metrics`` does."""
    return np.array([1.0 / math.log2(rank + 2) for rank in range(n)], dtype=np.float64)


def many_ranking_metrics(rec_lengths, rec_ids, rel_lengths, rel_ids, ks: Sequence[int]) -> dict:
    """``ranking_metrics`` and ``reciprocal_rank`` of many users at once, with NumPy.

    User ``i`` recommended ``rec_lengths[i]`` consecutive ids of ``rec_ids`` and holds
    out ``rel_lengths[i]`` (at least one) of ``rel_ids``; ids below 2**32. Returns
    ``{(metric, k): values}`` (one float64 per user; ``("mrr", 0)`` for the reciprocal
    rank), equal to the per-user functions above to the last bit: the same sums in
    the same order. Scoring a user at a time in Python was most of an evaluation's
    scoring time."""
    rec_lengths, rel_lengths = np.asarray(rec_lengths, np.int64), np.asarray(rel_lengths, np.int64)
    users = len(rec_lengths)
    if (rel_lengths < 1).any():
        raise ValueError("a user without held-out items cannot be scored")
    if min(ks) < 1:
        raise ValueError("k must be at least 1")
    row = np.repeat(np.arange(users, dtype=np.int64), rec_lengths)
    position = np.arange(len(row)) - np.repeat(np.cumsum(rec_lengths) - rec_lengths, rec_lengths)
    relevant = np.unique((np.repeat(np.arange(users, dtype=np.int64), rel_lengths) << 32)
                         | np.asarray(rel_ids, np.int64))  # a set per user, as ranking_metrics takes
    n_relevant = np.bincount(relevant >> 32, minlength=users)
    hit = np.isin((row << 32) | np.asarray(rec_ids, np.int64), relevant)
    hit_row, hit_position = row[hit], position[hit]
    # Hits so far at each hit, counting it: its index among the row's hits, plus one.
    seen = np.arange(len(hit_row)) - np.repeat(np.searchsorted(hit_row, np.arange(users)),
                                               np.bincount(hit_row, minlength=users)) + 1
    gains = _gains(int(max(max(ks), position.max() + 1 if len(position) else 1)))
    out = {}
    for k in ks:
        within = hit_position < k
        n_hits = np.bincount(hit_row[within], minlength=users)
        dcg = np.bincount(hit_row[within], weights=gains[hit_position[within]], minlength=users)
        ap = np.bincount(hit_row[within], weights=seen[within] / (hit_position[within] + 1), minlength=users)
        depth = np.minimum(k, n_relevant)
        # Python's own sum, term by term from 0, as ranking_metrics adds them.
        ideal = np.array([sum(float(g) for g in gains[:d]) for d in range(int(depth.max(initial=0)) + 1)])[depth]
        out[("hit_rate", k)] = (n_hits > 0).astype(np.float64)
        out[("recall", k)] = n_hits / n_relevant
        out[("precision", k)] = n_hits / k
        out[("ndcg", k)] = dcg / ideal
        out[("map", k)] = ap / depth
        out[("map_all", k)] = ap / n_relevant
    first = np.full(users, np.inf)
    np.minimum.at(first, hit_row, hit_position.astype(np.float64))
    out[("mrr", 0)] = np.where(np.isfinite(first), 1.0 / (first + 1), 0.0)
    return out
