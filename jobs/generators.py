"""Every candidate generator's user lists trained on one stretch of interactions: what the
offline evaluation scores and what the ranking stage (jobs.ranked) learns to combine."""
from __future__ import annotations

import logging
import time
from typing import Callable

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs import als, content, ease, hybrid, popularity

log = logging.getLogger(__name__)

# The algorithms that make lists from interactions alone; hybrid fuses their lists.
GENERATORS = ("popular", "als", "ease", "content")


def generator_lists(train: DataFrame, products: DataFrame, train_until, settings: dict,
                    algorithms: tuple[str, ...], for_users: DataFrame | None = None) -> DataFrame:
    """User lists (and the global popular list) of each named generator, and of hybrid when
    named, trained on ``train`` only, in the CANDIDATES layout.

    ``for_users`` (``user_id`` rows): lists for these users only. Every model still learns
    from all of ``train``; only the per-user lists, most of the cost, are left out for the
    others, and the lists made are the same."""
    def popular() -> DataFrame:
        return popularity.popularity_candidates(train, products, train_until,
                                                popularity.params_from_settings(settings["popularity"]),
                                                for_users=for_users)

    def collaborative() -> DataFrame:
        candidates, _ = als.als_candidates(train, train_until, als.params_from_settings(settings["als"]),
                                           product_lists=False, for_users=for_users)
        return candidates

    def item_item() -> DataFrame:
        return ease.ease_candidates(train, train_until, ease.params_from_settings(settings["ease"]),
                                    product_lists=False, for_users=for_users)

    def content_based() -> DataFrame:
        return content.content_candidates(train, products, train_until,
                                          content.params_from_settings(settings["content"]), for_users=for_users)

    builders: dict[str, Callable[[], DataFrame]] = {
        "popular": popular, "als": collaborative, "ease": item_item, "content": content_based}
    parts = [materialised(name, builders[name]) for name in algorithms if name in builders]
    if not parts:
        raise ValueError(f"no generator among {algorithms}; expected some of {GENERATORS}")
    lists = parts[0]
    for part in parts[1:]:
        lists = lists.unionByName(part)
    if "hybrid" in algorithms:
        fused = materialised("hybrid", lambda: hybrid.fused_user_lists(
            lists, hybrid.params_from_settings(settings["hybrid"]), train_until))
        lists = lists.unionByName(fused)
    return lists


def materialised(name: str, build: Callable[[], DataFrame]) -> DataFrame:
    """``build()``'s user and global lists, materialised (fusion, ranking and every metric
    read them again), with the time it took in the log."""
    started = time.monotonic()
    lists = build().where(F.col("subject_kind").isin("user", "global")).localCheckpoint()
    log.info("%s trained: %d lists (%.0f s)", name, lists.count(), time.monotonic() - started)
    return lists
