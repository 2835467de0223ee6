"""Skewed implicit interactions, generated with NumPy: a few users and items carry
most of the activity, as in shop logs."""
from __future__ import annotations

import numpy as np

EVENT_WEIGHTS = np.array([1.0, 1.0, 2.0, 4.0, 8.0])  # view, click, wishlist, add_to_cart, purchase


def generate(users: int, items: int, draws: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(user, item, rating)`` arrays (int32, int32, float32), one row per distinct pair.

    ``draws`` events: users by log-normal activity, items by a Zipf-like popularity
    (weight 1 / (rank + 20), ranks shuffled over the ids), event weights from
    ``EVENT_WEIGHTS``; a pair's rating is ``log1p`` of its summed weight, as
    ``jobs.als.confidence_from_interactions`` computes it.
    """
    rng = np.random.default_rng(seed)
    activity = rng.lognormal(0.0, 1.0, users)
    popularity = 1.0 / (np.arange(items) + 20.0)
    popularity = popularity[rng.permutation(items)]
    user = rng.choice(users, draws, p=activity / activity.sum())
    item = rng.choice(items, draws, p=popularity / popularity.sum())
    weight = rng.choice(EVENT_WEIGHTS, draws)
    pairs, position = np.unique(user.astype(np.int64) * items + item, return_inverse=True)
    summed = np.bincount(position, weights=weight)
    return ((pairs // items).astype(np.int32), (pairs % items).astype(np.int32),
            np.log1p(summed).astype(np.float32))
