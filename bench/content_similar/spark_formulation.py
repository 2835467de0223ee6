"""The Spark formulation of ``jobs.content.similar_products`` that the NumPy one replaced
(commit 5f62dee): windowed self-join of the postings, ``groupBy`` for the partial
scores, a window for the best ``RESCORED_PER_LIST * k``, map lookups for the exact
dot product, ``top_n_lists``. Kept as the reference that the parity test
(tests/test_content.py) and the benchmark (``python -m bench.content_similar``)
compare the NumPy version with; nothing in the pipeline calls it.
"""
from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from jobs.candidates import top_n_lists
from jobs.content import RESCORED_PER_LIST, ContentParams, _sparse


def candidate_pairs(vectors: DataFrame, params: ContentParams) -> DataFrame:
    """``(product_id, similar_id, partial)``, both ways, for every pair that meets in a
    posting-list window (the module docstring of jobs.content); ``partial`` sums
    ``w_a * w_b`` over the tokens through which the pair met."""
    block = params.block_size
    postings = _sparse(vectors).select("product_id", "sort_key", F.explode("entries").alias("e")).select(
        "product_id", "sort_key", F.col("e.term").alias("term"), F.col("e.weight").alias("weight"))
    in_term = Window.partitionBy("term")
    postings = (postings
                .withColumn("df", F.count(F.lit(1)).over(in_term))
                .withColumn("rank", F.row_number().over(in_term.orderBy("sort_key", "product_id")) - 1)
                .withColumn("first_window", F.floor(F.col("rank") / block))
                # A short list is one window; a long one is cut twice, the second cut half a window later.
                .withColumn("shift", F.explode(F.when(F.col("df") <= block, F.array(F.lit(0)))
                                               .otherwise(F.array(F.lit(0), F.lit(block // 2)))))
                .select("product_id", "term", "weight", "shift", "first_window",
                        F.floor((F.col("rank") + F.col("shift")) / block).alias("window")))
    a, b = postings.alias("a"), postings.alias("b")
    met = a.join(b, (F.col("a.term") == F.col("b.term")) & (F.col("a.shift") == F.col("b.shift"))
                 & (F.col("a.window") == F.col("b.window")) & (F.col("a.product_id") < F.col("b.product_id"))
                 # The shifted cut adds only pairs the first cut split, so a pair meets once per token.
                 & ((F.col("a.shift") == 0) | (F.col("a.first_window") != F.col("b.first_window"))))
    pairs = (met.groupBy(F.col("a.product_id").alias("left_id"), F.col("b.product_id").alias("right_id"))
             .agg(F.sum(F.col("a.weight") * F.col("b.weight")).alias("partial")))
    return (pairs.select(F.col("left_id").alias("product_id"), F.col("right_id").alias("similar_id"), "partial")
            .unionByName(pairs.select(F.col("right_id").alias("product_id"),
                                      F.col("left_id").alias("similar_id"), "partial")))


def spark_similar_products(vectors: DataFrame, params: ContentParams) -> DataFrame:
    """``(subject_id, product_ids, scores)`` as ``jobs.content.similar_products`` gives them,
    computed with Spark joins, windows and aggregations."""
    k = params.similar_top_n
    by_partial = Window.partitionBy("product_id").orderBy(F.col("partial").desc(), F.col("similar_id"))
    best = (candidate_pairs(vectors, params)
            .withColumn("rank", F.row_number().over(by_partial)).where(F.col("rank") <= RESCORED_PER_LIST * k))
    weights = _sparse(vectors).select("product_id", F.map_from_entries("entries").alias("weights"))
    subject = weights.select("product_id", F.col("weights").alias("subject_weights"))
    similar = weights.select(F.col("product_id").alias("similar_id"), F.col("weights").alias("similar_weights"))
    dot = F.aggregate(F.map_entries("subject_weights"), F.lit(0.0), lambda acc, e: acc + e["value"] * F.coalesce(
        F.try_element_at(F.col("similar_weights"), e["key"]), F.lit(0.0)))
    scored = (best.join(subject, "product_id").join(similar, "similar_id")
              .select(F.col("product_id").alias("subject"), F.col("similar_id").alias("product_id"),
                      dot.alias("score")))
    return top_n_lists(scored, F.col("subject"), k)
