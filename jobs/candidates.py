"""Helpers every algorithm job shares to honour the candidates contract
(schemas.tables.CANDIDATES): ranked lists per subject, and the partition write."""
from __future__ import annotations

import hashlib
import json
from datetime import datetime

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from schemas.tables import CANDIDATES

from jobs.delta_tables import ensure_table


def top_n_lists(scored: DataFrame, subject: Column, n: int) -> DataFrame:
    """``(subject_id, product_ids, scores)``: each subject's ``n`` best products.

    ``scored`` has ``product_id`` and ``score``; ties break on the smaller product id,
    so the same input always gives the same lists.
    """
    order = Window.partitionBy("subject_id").orderBy(F.col("score").desc(), F.col("product_id").asc())
    ranked = (scored.withColumn("subject_id", subject.cast("string"))
              .withColumn("rank", F.row_number().over(order)).where(F.col("rank") <= n))
    return (ranked.groupBy("subject_id")
            .agg(F.array_sort(F.collect_list(F.struct("rank", "product_id", "score"))).alias("items"))
            .select("subject_id",
                    F.transform("items", lambda x: x["product_id"]).alias("product_ids"),
                    F.transform("items", lambda x: x["score"].cast("float")).alias("scores")))


def top_n_list(scored: DataFrame, subject_id: str, n: int) -> DataFrame:
    """One ranked list of the ``n`` best products of all of ``scored``, as ``top_n_lists``
    gives per subject. A top-n ``limit`` instead of a window: a window keyed on a
    constant would pull every row into a single partition."""
    best = scored.orderBy(F.col("score").desc(), F.col("product_id").asc()).limit(n)
    ordered = F.array_sort(F.collect_list(F.struct((-F.col("score")).alias("neg_score"), "product_id", "score")))
    return (best.agg(ordered.alias("items"))
            .where(F.size("items") > 0)
            .select(F.lit(subject_id).alias("subject_id"),
                    F.transform("items", lambda x: x["product_id"]).alias("product_ids"),
                    F.transform("items", lambda x: x["score"].cast("float")).alias("scores")))


def as_candidates(lists: DataFrame, subject_kind: str, algorithm: str, model_version: str) -> DataFrame:
    """Ranked lists in the CANDIDATES column order."""
    return lists.select(F.lit(subject_kind).alias("subject_kind"), "subject_id",
                        F.lit(algorithm).alias("algorithm"), "product_ids", "scores",
                        F.lit(model_version).alias("model_version")).select(*CANDIDATES.names)


def params_digest(params: dict) -> str:
    """Short digest of a configuration, to tell which settings produced an output."""
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:8]


def model_version(algorithm: str, as_of: datetime, params: dict) -> str:
    """``<algorithm>-<as_of>-<digest of params>``: equal for equal inputs, so re-runs are idempotent."""
    return f"{algorithm}-{as_of:%Y%m%dT%H%M%SZ}-{params_digest(params)}"


def replace_algorithm_candidates(spark: SparkSession, path: str, algorithm: str,
                                 candidates: DataFrame) -> dict[str, int]:
    """Replace ``algorithm``'s partitions of the candidates table in one Delta commit
    (other algorithms' lists are untouched); return the lists written per subject kind."""
    ensure_table(spark, path, CANDIDATES)
    (candidates.write.format("delta").mode("overwrite")
     .option("replaceWhere", f"algorithm = '{algorithm}'")
     .save(path))
    written = (spark.read.format("delta").load(path).where(F.col("algorithm") == algorithm)
               .groupBy("subject_kind").count().collect())
    return {r["subject_kind"]: r["count"] for r in written}
