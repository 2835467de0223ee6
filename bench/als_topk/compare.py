"""Both top-N methods on one fitted model, as ``(user ids, item ids, scores)`` NumPy
arrays ordered by user, and how their lists compare."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.ml.recommendation import ALSModel
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from jobs import als

Lists = tuple[np.ndarray, np.ndarray, np.ndarray]  # users (n,), ids (n, k), scores (n, k)
SCORE_RTOL, SCORE_ATOL = 1e-5, 1e-6


def _as_arrays(table: pa.Table, user: str, ids: str, scores: str) -> Lists:
    users = np.asarray(table.column(user).to_numpy(), dtype=np.int64)
    id_lists, score_lists = table.column(ids).combine_chunks(), table.column(scores).combine_chunks()
    lengths = pc.list_value_length(id_lists).to_numpy(zero_copy_only=False)
    if len(lengths) and (lengths != lengths[0]).any():
        raise ValueError("lists of different lengths: the comparison expects k items for every user")
    k = int(lengths[0]) if len(lengths) else 0
    flat_ids = pc.list_flatten(id_lists).to_numpy(zero_copy_only=False).astype(np.int64).reshape(-1, k)
    flat_scores = pc.list_flatten(score_lists).to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, k)
    order = np.argsort(users)
    return users[order], flat_ids[order], flat_scores[order]


def blocked_lists(spark: SparkSession, model: ALSModel, params: als.AlsParams) -> Lists:
    """The job's method: item factors collected and broadcast, ``user_recommendations``
    over the user factors (ALS indexes serve as ids here)."""
    items = als.collect_item_matrix(model.itemFactors.select(F.col("id").cast("long").alias("product_id"),
                                                             F.col("features").alias("factors")))
    users = model.userFactors.select(F.col("id").cast("long").alias("user_id"), F.col("features").alias("factors"))
    nothing_bought = spark.createDataFrame([], "user_id long, product_id long")
    table = als.user_recommendations(users, items, nothing_bought, params).toArrow()
    table = table.set_column(0, "subject_id", pc.cast(table.column("subject_id"), pa.int64()))
    return _as_arrays(table, "subject_id", "product_ids", "scores")


def rfau_lists(model: ALSModel, k: int) -> Lists:
    """Spark ML's ``recommendForAllUsers(k)``."""
    table = (model.recommendForAllUsers(k)
             .select("user", F.col("recommendations.item").alias("ids"),
                     F.col("recommendations.rating").alias("scores")).toArrow())
    return _as_arrays(table, "user", "ids", "scores")


def compare_lists(ours: Lists, theirs: Lists) -> dict:
    """Counts of identical lists, same ids in another order, and different ids; a
    difference counts as ties when both score rows agree position by position."""
    users = np.intersect1d(ours[0], theirs[0])
    a = [x[np.searchsorted(ours[0], users)] for x in ours[1:]]
    b = [x[np.searchsorted(theirs[0], users)] for x in theirs[1:]]
    identical = (a[0] == b[0]).all(axis=1)
    same_set = (np.sort(a[0], axis=1) == np.sort(b[0], axis=1)).all(axis=1)
    scores_agree = np.isclose(a[1], b[1], rtol=SCORE_RTOL, atol=SCORE_ATOL).all(axis=1)
    different = ~same_set
    return {
        "users": int(len(users)), "only_in_blocked": int(len(np.setdiff1d(ours[0], users))),
        "only_in_recommend_for_all_users": int(len(np.setdiff1d(theirs[0], users))),
        "identical": int(identical.sum()),
        "same_ids_other_order": int((same_set & ~identical).sum()),
        "same_ids_other_order_ties": int((same_set & ~identical & scores_agree).sum()),
        "different_ids": int(different.sum()),
        "different_ids_ties": int((different & scores_agree).sum()),
        "scores_disagree": int((~scores_agree).sum()),
        "max_score_difference": float(np.abs(a[1] - b[1]).max()) if len(users) else 0.0,
        "tolerance": f"rtol {SCORE_RTOL:g}, atol {SCORE_ATOL:g}",
    }
