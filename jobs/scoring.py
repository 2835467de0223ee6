"""Scoring served lists against held-out products, every algorithm in one Spark pass.

Per scored user: the metrics of ``jobs.ranking_metrics`` at each k, and MRR. Per
algorithm and user segment: their means. Per algorithm, over all its users: catalog
coverage and novelty of the top max(k), and the share of users served the fallback.

Each partition sums its users' values into a few rows per (algorithm, segment) and
the driver adds those up (``combine_parts``). Scoring an algorithm at a time, with
a per-user metrics frame that two aggregations, two explodes and a fallback count
each read again, took ~100 s for five algorithms at 1M events (26 s this way), most
of it re-reading and re-joining the same lists.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from functools import partial
from typing import Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from schemas.tables import GLOBAL_SUBJECT

from jobs.ranking_metrics import many_ranking_metrics
from jobs.top_n import positions_in_runs

BASELINE = "global_popular"  # not a served algorithm: the floor every other must beat
ALL_USERS = "all"            # the segment pooling every scored user

# What each partition yields: per (algorithm, segment, metric) the sum of the users'
# values and how many users; "shown" rows carry the distinct products the partition
# showed in a top max(k), for coverage.
SCORE_PARTS = "algorithm string, segment string, metric string, total double, users long, shown array<bigint>"
_PARTS_SCHEMA = pa.schema([("algorithm", pa.string()), ("segment", pa.string()), ("metric", pa.string()),
                           ("total", pa.float64()), ("users", pa.int64()), ("shown", pa.list_(pa.int64()))])
# Per-user quantities summed beside the ranking metrics (not results themselves).
_FALLBACK, _INFORMATION, _SHOWN_ITEMS, _SHOWN = "fallback", "self_information", "shown_items", "shown"


@dataclass(frozen=True)
class ProductShares:
    """Each product's share of the training rows (``product_ids`` sorted) and how many
    rows there were: what novelty reads. A product never trained on counts as one row."""
    product_ids: np.ndarray
    shares: np.ndarray
    rows: int

    def as_tuple(self) -> tuple[np.ndarray, np.ndarray, int]:
        """Plain containers for a broadcast (the Python workers unpickle them)."""
        return self.product_ids, self.shares, self.rows


def product_shares(train: DataFrame) -> ProductShares:
    """``ProductShares`` of ``train`` (one row per product reaches the driver)."""
    counts = train.groupBy("product_id").count().toPandas().sort_values("product_id")
    rows = max(int(counts["count"].sum()), 1)
    return ProductShares(counts["product_id"].to_numpy(np.int64), counts["count"].to_numpy(np.float64) / rows, rows)


def self_information(ids: np.ndarray, shared: tuple[np.ndarray, np.ndarray, int]) -> np.ndarray:
    """``-log2`` of each product's share of the training rows (``ProductShares.as_tuple``)."""
    product_ids, shares, rows = shared
    if not len(product_ids):
        return np.full(len(ids), np.log2(rows))
    at = np.minimum(np.searchsorted(product_ids, ids), len(product_ids) - 1)
    return -np.log2(np.where(product_ids[at] == ids, shares[at], 1.0 / rows))


def served_lists(candidates: DataFrame, users: DataFrame, algorithms: Sequence[str]) -> DataFrame:
    """``(algorithm, user_id, product_ids, fallback)``: each user's list from each of
    ``algorithms``, or the global popular list (``fallback`` true) as the lookup server
    would answer. ``BASELINE`` serves the global list to everyone (``fallback`` false).

    ``users`` (``user_id`` rows) is broadcast: the lists are not shuffled, only the
    (algorithm, user) pairs without a list are found by a join."""
    spark = candidates.sparkSession
    scored = F.broadcast(users.select("user_id"))
    own = (candidates.where((F.col("subject_kind") == "user") & F.col("algorithm").isin(*algorithms)
                            & (F.col("algorithm") != BASELINE))
           .select("algorithm", F.col("subject_id").cast("long").alias("user_id"), "product_ids")
           .join(scored, "user_id", "left_semi"))
    popular = (candidates.where((F.col("subject_kind") == "global") & (F.col("algorithm") == "popular")
                                & (F.col("subject_id") == GLOBAL_SUBJECT))
               .select(F.col("product_ids").alias("popular_ids")))
    names = spark.createDataFrame([(a,) for a in dict.fromkeys(algorithms)], "algorithm string")
    without_list = (scored.crossJoin(F.broadcast(names))
                    .join(own.select("algorithm", "user_id"), ["algorithm", "user_id"], "left_anti")
                    .crossJoin(popular)
                    .select("algorithm", "user_id", F.col("popular_ids").alias("product_ids"),
                            (F.col("algorithm") != BASELINE).alias("fallback")))
    return own.select("algorithm", "user_id", "product_ids", F.lit(False).alias("fallback")).unionByName(without_list)


def score_parts(served: DataFrame, held_out: DataFrame, segments: DataFrame, shares: ProductShares,
                ks: Sequence[int]) -> DataFrame:
    """``SCORE_PARTS`` rows: ``served`` (``served_lists``) scored against ``held_out``
    (``user_id, relevant``) per user segment (``user_id, segment``), summed per partition."""
    spark = served.sparkSession
    shared = spark.sparkContext.broadcast(shares.as_tuple())
    scored_users = held_out.join(segments, "user_id")
    joined = served.join(F.broadcast(scored_users), "user_id")
    return (joined.select("algorithm", "segment", "product_ids", "fallback", "relevant")
            .mapInArrow(partial(_sum_partition, ks=tuple(ks), shared=shared), SCORE_PARTS))


def _sum_partition(batches: Iterator[pa.RecordBatch], ks: tuple[int, ...], shared) -> Iterator[pa.RecordBatch]:
    """A partition's users summed per (algorithm, segment, metric), and its shown products."""
    top = max(ks)
    sums: list[pd.DataFrame] = []
    shown: dict[str, list[np.ndarray]] = defaultdict(list)
    for batch in batches:
        algorithm = batch.column(0).to_numpy(zero_copy_only=False)
        recommended, relevant = batch.column(2), batch.column(4)
        rec_lengths = recommended.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
        rec_ids = pc.list_flatten(recommended).to_numpy(zero_copy_only=False)
        values = many_ranking_metrics(
            rec_lengths, rec_ids, relevant.value_lengths().fill_null(0).to_numpy(zero_copy_only=False),
            pc.list_flatten(relevant).to_numpy(zero_copy_only=False), ks)
        # The top max(k) of each list: their self-information per user, and the products per algorithm.
        row = np.repeat(np.arange(batch.num_rows), rec_lengths)
        in_top = positions_in_runs(rec_lengths) < top
        top_row, top_ids = row[in_top], rec_ids[in_top]
        information = np.bincount(top_row, weights=self_information(top_ids, shared.value), minlength=batch.num_rows)
        for name in np.unique(algorithm):
            shown[name].append(np.unique(top_ids[algorithm[top_row] == name]))
        frame = pd.DataFrame({"algorithm": algorithm, "segment": batch.column(1).to_numpy(zero_copy_only=False),
                              **{_metric_name(m, k): v for (m, k), v in values.items()},
                              _FALLBACK: batch.column(3).to_numpy(zero_copy_only=False).astype(np.float64),
                              _INFORMATION: information,
                              _SHOWN_ITEMS: np.minimum(rec_lengths, top).astype(np.float64)})
        grouped = frame.groupby(["algorithm", "segment"])
        sums.append(grouped.sum().assign(users=grouped.size()))
    if not sums:
        return
    total = pd.concat(sums).groupby(level=["algorithm", "segment"]).sum().reset_index()
    summed = total.melt(id_vars=["algorithm", "segment", "users"], var_name="metric", value_name="total")
    shown_rows = pd.DataFrame({"algorithm": list(shown), "segment": ALL_USERS, "metric": _SHOWN, "total": 0.0,
                               "users": 0, "shown": [np.unique(np.concatenate(ids)) for ids in shown.values()]})
    yield pa.RecordBatch.from_pandas(pd.concat([summed, shown_rows], ignore_index=True), schema=_PARTS_SCHEMA,
                                     preserve_index=False)


def _metric_name(metric: str, k: int) -> str:
    return metric if metric == "mrr" else f"{metric}@{k}"


def combine_parts(parts: Iterable, ks: Sequence[int], catalog_size: int | None) -> list[tuple]:
    """``(algorithm, segment, metric, value, users)`` from ``score_parts`` rows: each metric's
    mean per segment and over ``ALL_USERS``; per algorithm over all users, the share served
    the fallback and, at the largest k, novelty (mean self-information of a shown product)
    and, when ``catalog_size`` is given, coverage (share of the catalog shown to anyone)."""
    totals: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0.0, 0])
    shown: dict[str, list] = defaultdict(list)
    for part in parts:
        if part["metric"] == _SHOWN:
            shown[part["algorithm"]].append(np.asarray(part["shown"], np.int64))
            continue
        for segment in (part["segment"], ALL_USERS):
            total = totals[(part["algorithm"], segment, part["metric"])]
            total[0] += part["total"]
            total[1] += part["users"]
    results = []
    k = max(ks)
    for (algorithm, segment, metric), (total, users) in sorted(totals.items()):
        if metric not in (_FALLBACK, _INFORMATION, _SHOWN_ITEMS):
            results.append((algorithm, segment, metric, total / users, users))
        elif segment == ALL_USERS and metric == _FALLBACK:
            items = totals[(algorithm, ALL_USERS, _SHOWN_ITEMS)][0]
            information = totals[(algorithm, ALL_USERS, _INFORMATION)][0]
            results.append((algorithm, ALL_USERS, "fallback_share", total / users, users))
            results.append((algorithm, ALL_USERS, f"novelty@{k}", information / items if items else 0.0, users))
            if catalog_size is not None:
                products = len(np.unique(np.concatenate(shown[algorithm]))) if shown[algorithm] else 0
                results.append((algorithm, ALL_USERS, f"coverage@{k}", products / max(catalog_size, 1), users))
    return results


def score(served: DataFrame, held_out: DataFrame, segments: DataFrame, shares: ProductShares,
          ks: Sequence[int], catalog_size: int | None = None) -> list[tuple]:
    """``combine_parts`` of ``score_parts``: one Spark job for every algorithm in ``served``."""
    return combine_parts(score_parts(served, held_out, segments, shares, ks).collect(), ks, catalog_size)
