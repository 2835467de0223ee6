"""Content: TF-IDF similarity over the catalog, as candidate lists.

Writes ``algorithm = 'content'`` rows of the candidates table:

- ``product``  per active product, the ``similar_top_n`` most similar active
               products by cosine of their TF-IDF vectors (itself excluded). Built
               from the catalog alone, so a product without a single event has a list;
- ``user``     per user, the ``top_n`` best unseen products for the user's content
               profile (below), from the neighbour lists of the products they touched.

Documents. One bag of tokens per active product (``product_documents``):

- ``cat:<prefix>`` for each prefix of the category path (``cat:electronics``,
  ``cat:electronics.phone``), so products of one department share a little and
  products of one leaf category share more;
- ``<key>=<value>`` per ``other_features`` entry, lower-cased, blanks as ``_``. Left
  out are entries that are (nearly) unique per product: keys ``id``, ``sku``, ``ean``,
  ``upc``, ``gtin``, ``isbn``, ``mpn``, ``url`` or ending in ``_at``, ``_id``,
  ``_date``, ``_time``, ``_ts``, ``_url``, and values that are numbers or start with
  a ``yyyy-mm-dd`` date. Such a token is in one document only: it pairs the product
  with nothing, yet its high IDF takes a large share of the product's L2 norm and
  shrinks every one of its cosines;
- ``word:<w>`` per word (letters/digits, 2+ characters, not all digits) of a text
  feature: a key in TEXT_FEATURES (``title``, ``name``, ``description``) or any
  value of three or more words;
- ``price:<lo>-<hi>`` on the 1-2-5 log scale (``price:10-20``, ``price:20-50``, ...;
  ``price:0-1`` below 1); none when the price is null.

Vectors: HashingTF (``num_features``, binary counts: tokens are de-duplicated) and
IDF (``ln((n + 1) / (df + 1))``), L2-normalised, so a dot product is a cosine.

Similar products (``similar_products``): an inverted index with windowed posting
lists, then exact rescoring. All pairs are never formed: ``n`` products are
``n^2 / 2`` pairs (2e11 at 600k), and even "all pairs that share a token" is
quadratic per token because every product of a department shares its ``cat:``
token and a colour or price bucket spans the whole catalog.

1. Postings ``(term, product, weight)`` are exploded from the sparse vectors.
2. Candidate pairs are the products that meet in a posting list. A list with at
   most ``block_size`` products pairs all its members. A longer one is sorted by
   the products' documents (category path first, then the other tokens, so the
   products of one leaf category, and within it one brand, colour, price bucket,
   sit together) and cut into windows of ``block_size`` consecutive products,
   twice, the second cut shifted by half a window and adding only the pairs the
   first cut split: each member pairs with at least the ``block_size / 2``
   products on either side of it (the "sorted neighbourhood" of record linkage),
   and a pair meets at most once per token. Rows per token are thus at most
   ``df * block_size`` instead of ``df^2``, and the whole join at most
   ``postings * block_size``: linear in the catalog, and every window is an
   equi-join block of bounded size, so no task is skewed by a big token.
3. A pair's partial score sums ``w_a * w_b`` over the tokens through which it met.
   Every posting list is a sub-sequence of one catalog-wide order, so two products
   fewer than ``block_size / 2`` places apart in that order meet through every
   token they share and their partial score is their cosine; otherwise it is a
   lower bound.
4. Per product the ``RESCORED_PER_LIST * similar_top_n`` best candidates by partial
   score are rescored with the full dot product (all shared tokens), and the
   ``similar_top_n`` best kept: every score written is the exact cosine.

The approximation: a product's list is drawn from the candidates it met, not
from the whole catalog. Candidates through rare tokens (df <= ``block_size``:
title words, uncommon features, small categories) are never missed; in a category
larger than ``block_size`` a product meets those nearest it in the sort order
(same brand, then colour, then price), which for documents shaped like ours are
also the highest cosines. On a generated 1,000-product catalog, windows of 32
find 99 % of the exact top 10 (tests/test_content.py). Set ``block_size`` above
the longest posting list for the exact top-K (quadratic in that list's length).

Users: the content profile of a user is the sum of the vectors of the products
they touched, each weighted by its decayed event weight
(``event_weights[type] * 0.5 ** (age_days / half_life_days)``, summed over the
user's events on it, as in jobs.interactions). The profile is never formed: its dot
product with a candidate is ``sum over touched t of weight(t) * cos(t, candidate)``,
taken over the neighbour lists of the touched products (a user x product cross
join would be quadratic). Touched products (an event of a type with a positive
weight, up to ``--as-of``) are left out; inactive products are in no neighbour
list, so never recommended.

Run: ``python -m jobs.content --help`` or ``spark-submit jobs/content.py --help``.
"""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Callable

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.candidates import as_candidates, model_version, replace_algorithm_candidates, top_n_lists
from jobs.cli import run_algorithm_job
from jobs.interactions import check_decay, read_interactions, weighted
from jobs.paths import DataPaths

log = logging.getLogger(__name__)

ALGORITHM = "content"

TEXT_FEATURES = ("title", "name", "description")
# other_features entries left out of documents (see the module docstring).
UNIQUE_KEY_PATTERN = r"^(id|sku|ean|upc|gtin|isbn|mpn|url|.*_(at|id|date|time|ts|url))$"
UNIQUE_VALUE_PATTERN = r"^([+-]?[0-9]+([.,][0-9]+)?|[0-9]{4}-[0-9]{2}-[0-9]{2}.*)$"
# Candidates per list rescored exactly, as a multiple of similar_top_n: a partial score
# is a lower bound, so a few more than kept give the missed tokens a chance to count.
RESCORED_PER_LIST = 4
# Price bucket lower edges, 1-2-5 per decade up to the schema's maximum price (1e9).
PRICE_EDGES = tuple(m * 10 ** e for e in range(9) for m in (1, 2, 5)) + (10 ** 9,)

# (stage name, frame) -> frame; run_content passes one that caches, counts and times.
Stage = Callable[[str, DataFrame], DataFrame]


def _no_stage(name: str, df: DataFrame) -> DataFrame:
    return df


@dataclass(frozen=True)
class ContentParams:
    num_features: int = 1 << 18
    top_n: int = 200
    similar_top_n: int = 50
    block_size: int = 200
    half_life_days: float = 30.0
    event_weights: dict[str, float] = field(default_factory=lambda: {"view": 1.0, "purchase": 8.0})

    def __post_init__(self):
        if not 1 <= self.num_features <= 2 ** 31 - 1:
            raise ValueError("num_features must be between 1 and 2^31 - 1")
        if self.top_n < 1 or self.similar_top_n < 1:
            raise ValueError("top_n and similar_top_n must be at least 1")
        if self.block_size < 2:
            raise ValueError("block_size must be at least 2 (products per posting-list window)")
        check_decay(self)


# --- pure transforms --------------------------------------------------------

def _price_token(price: Column) -> Column:
    bucket = F.when(price < PRICE_EDGES[0], F.lit(f"price:0-{PRICE_EDGES[0]}"))
    for lo, hi in zip(PRICE_EDGES, PRICE_EDGES[1:]):
        bucket = bucket.when(price < hi, F.lit(f"price:{lo}-{hi}"))
    return F.when(price.isNotNull(), bucket.otherwise(F.lit(f"price:{PRICE_EDGES[-1]}+")))


def product_documents(products: DataFrame) -> DataFrame:
    """``(product_id, category, tokens)`` for each active product (null ``active`` counts as active)."""
    segments = F.filter(F.split(F.lower(F.trim("category")), r"\."), lambda s: s != "")
    category_tokens = F.transform(F.sequence(F.lit(1), F.size(segments)),
                                  lambda i: F.concat(F.lit("cat:"), F.array_join(F.slice(segments, 1, i), ".")))
    # An empty category path would make sequence(1, 0) count down; it has no tokens.
    category_tokens = F.when(F.size(segments) > 0, category_tokens).otherwise(F.array().cast("array<string>"))

    entries = F.filter(
        F.map_entries(F.coalesce("other_features", F.create_map().cast("map<string,string>"))),
        lambda e: e["value"].isNotNull() & (F.trim(e["value"]) != "")
        & ~F.lower(F.trim(e["key"])).rlike(UNIQUE_KEY_PATTERN)
        & ~F.trim(e["value"]).rlike(UNIQUE_VALUE_PATTERN))

    def is_text(e: Column) -> Column:
        return (F.lower(F.trim(e["key"])).isin(*TEXT_FEATURES)
                | (F.size(F.split(F.trim(e["value"]), r"\s+")) >= 3))

    key_values = F.transform(F.filter(entries, lambda e: ~is_text(e)), lambda e: F.concat(
        F.regexp_replace(F.lower(F.trim(e["key"])), r"\s+", "_"), F.lit("="),
        F.regexp_replace(F.lower(F.trim(e["value"])), r"\s+", "_")))
    words = F.flatten(F.transform(F.filter(entries, is_text),
                                  lambda e: F.split(F.lower(e["value"]), r"[^\p{L}\p{N}]+")))
    words = F.transform(F.filter(words, lambda w: (F.length(w) >= 2) & ~w.rlike(r"^[0-9]+$")),
                        lambda w: F.concat(F.lit("word:"), w))
    price = F.filter(F.array(_price_token(F.col("price"))), lambda t: t.isNotNull())

    return (products.where(F.coalesce(F.col("active"), F.lit(True)))
            .select("product_id", "category",
                    F.array_distinct(F.concat(category_tokens, key_values, price, words)).alias("tokens")))


def tfidf_vectors(documents: DataFrame, params: ContentParams) -> DataFrame:
    """``documents`` plus ``features``: L2-normalised TF-IDF sparse vectors (fits the IDF: one Spark job)."""
    from pyspark.ml.feature import IDF, HashingTF, Normalizer

    tf = HashingTF(inputCol="tokens", outputCol="tf", numFeatures=params.num_features, binary=True)
    counted = tf.transform(documents)
    idf = IDF(inputCol="tf", outputCol="tfidf").fit(counted)
    normalised = Normalizer(inputCol="tfidf", outputCol="features", p=2.0).transform(idf.transform(counted))
    return normalised.drop("tf", "tfidf")


# A Spark ML vector as the SQL struct it is stored as (type 0 sparse, 1 dense).
_VECTOR_STRUCT = T.StructType([T.StructField("v", T.StructType([
    T.StructField("type", T.ByteType()), T.StructField("size", T.IntegerType()),
    T.StructField("indices", T.ArrayType(T.IntegerType())), T.StructField("values", T.ArrayType(T.DoubleType()))]))])


def _vector_entries(vector: Column) -> Column:
    """``array<struct<term, weight>>`` of a vector's non-zero entries.

    Spark ML vectors have no SQL accessors; ``to_json`` writes one as its SQL struct
    (type, size, indices, values), which ``from_json`` reads back. Both run in the
    JVM: a Python UDF here costs a Python round trip per product, per use.
    """
    parsed = F.from_json(F.to_json(F.struct(vector.alias("v"))), _VECTOR_STRUCT)["v"]
    values = parsed["values"]
    indices = F.when(parsed["type"] == 0, parsed["indices"]).otherwise(
        F.when(F.size(values) > 0, F.sequence(F.lit(0), F.size(values) - 1)))
    entries = F.zip_with(indices, values, lambda i, x: F.struct(i.alias("term"), x.alias("weight")))
    return F.filter(entries, lambda e: e["weight"] != 0)


def _sort_key(tokens: Column) -> Column:
    """Where a product sits in a long posting list: category prefixes first (shortest
    first), then its other tokens in order, so similar documents sort together."""
    category = F.array_sort(F.filter(tokens, lambda t: t.startswith("cat:")))
    others = F.array_sort(F.filter(tokens, lambda t: ~t.startswith("cat:")))
    return F.concat(category, others)


def _sparse(vectors: DataFrame) -> DataFrame:
    """``(product_id, sort_key, entries)`` of the products with a non-zero vector."""
    return (vectors.select("product_id", _sort_key(F.col("tokens")).alias("sort_key"),
                           _vector_entries(F.col("features")).alias("entries"))
            .where(F.size("entries") > 0))


def candidate_pairs(vectors: DataFrame, params: ContentParams) -> DataFrame:
    """``(product_id, similar_id, partial)``, both ways, for every pair that meets in a
    posting-list window (the module docstring); ``partial`` sums ``w_a * w_b`` over the
    tokens through which the pair met: the exact cosine when it met through all the
    tokens it shares (always so within ``block_size / 2`` places in the sort order),
    a lower bound otherwise."""
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


def similar_products(vectors: DataFrame, params: ContentParams) -> DataFrame:
    """``(subject_id, product_ids, scores)``: each product's ``similar_top_n`` most similar
    products, itself excluded, scored by their exact cosine (see the module docstring):
    the best candidates by partial score are rescored with the full dot product."""
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


def user_content_lists(weighted_rows: DataFrame, similar: DataFrame, params: ContentParams) -> DataFrame:
    """``(subject_id, product_ids, scores)`` per user: ``score(c) = sum over touched t of
    weight(t) * sim(t, c)``, over the neighbour lists ``similar``; touched products left out."""
    touched = (weighted_rows.groupBy("user_id", "product_id").agg(F.sum("weight").alias("weight"))
               .withColumnRenamed("product_id", "touched_id"))
    neighbours = (similar.select(F.col("subject_id").cast("long").alias("touched_id"),
                                 F.explode(F.arrays_zip("product_ids", "scores")).alias("n"))
                  .select("touched_id", F.col("n.product_ids").alias("product_id"),
                          F.col("n.scores").cast("double").alias("similarity")))
    scored = (touched.join(neighbours, "touched_id")
              .groupBy("user_id", "product_id")
              .agg(F.sum(F.col("weight") * F.col("similarity")).alias("score")))
    seen = touched.select("user_id", F.col("touched_id").alias("product_id"))
    unseen = scored.join(seen, ["user_id", "product_id"], "left_anti")
    return top_n_lists(unseen, F.col("user_id"), params.top_n)


def content_candidates(interaction_rows: DataFrame, products: DataFrame, as_of: datetime,
                       params: ContentParams, stage: Stage = _no_stage) -> DataFrame:
    """All content candidate lists (product and user) in the CANDIDATES layout.

    ``stage(name, frame)`` sees each intermediate frame and returns the one to go on
    with: run_content caches, counts and times them there; the default passes through.
    """
    version = model_version(ALGORITHM, as_of, asdict(params))
    documents = stage("documents", product_documents(products))
    vectors = stage("tfidf", tfidf_vectors(documents, params))
    similar = stage("similar products", similar_products(vectors, params))
    users = stage("user lists", user_content_lists(weighted(interaction_rows, as_of, params), similar, params))
    return (as_candidates(similar, "product", ALGORITHM, version)
            .unionByName(as_candidates(users, "user", ALGORITHM, version)))


# --- I/O edges --------------------------------------------------------------

def params_from_settings(settings: dict) -> ContentParams:
    return ContentParams(**settings)


def run_content(spark: SparkSession, paths: DataPaths, as_of: datetime, params: ContentParams) -> dict[str, int]:
    """Compute and store content candidates; return the lists written per subject kind."""
    cached: list[DataFrame] = []
    mark = [time.monotonic()]

    def timed_stage(name: str, df: DataFrame) -> DataFrame:
        # Timed from the previous stage's end: building a frame can run jobs too (the IDF fit).
        df = df.persist()
        cached.append(df)
        rows = df.count()
        now = time.monotonic()
        log.info("content: %s: %d rows in %.1f s", name, rows, now - mark[0])
        mark[0] = now
        return df

    products = spark.read.format("delta").load(paths.table("products"))
    try:
        candidates = content_candidates(read_interactions(spark, paths), products, as_of, params, timed_stage)
        started = time.monotonic()
        counts = replace_algorithm_candidates(spark, paths.table("candidates"), ALGORITHM, candidates)
        log.info("content: write: %s in %.1f s", counts, time.monotonic() - started)
    finally:
        for df in cached:
            df.unpersist()
    return counts


def main(argv: list[str] | None = None) -> int:
    return run_algorithm_job(argv, __doc__.split("\n\n")[0], ALGORITHM, "content", params_from_settings, run_content)


if __name__ == "__main__":
    sys.exit(main())
