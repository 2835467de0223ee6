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

How (``similar_products``): the non-zero vectors are collected to the driver once
(one Arrow collect, Spark sorting them by ``(sort key, product id)``) as flat arrays
(``SparseCatalog``: CSR by product), and ``similar_lists`` does steps 1-4 with NumPy,
a block of subject products at a time: each posting's partners are at most two
ranges of ranks in its posting list (``_window_partners``), expanded into pair rows
and summed per (subject, partner) in ascending term order; the rescoring sums a
pair's shared terms in ascending term order from 0.0, as the Spark ``aggregate``
over the subject's map entries did, so the written scores have the same bits. The
lists come back as a DataFrame of a pyarrow table. The Spark formulation it replaced
(windowed self-join, ``groupBy``, window, map lookups: 152 s for 10k products) is
kept as the reference in bench/content_similar/spark_formulation.py; its partial
scores were summed in Spark's arrival order, which only decides which candidates are
rescored, never a score written.

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

How (``user_content_lists``): the neighbour lists are collected to the driver
once as flat arrays (``NeighbourLists``: CSR offsets, neighbour positions,
similarities) and broadcast; each user's events are gathered into one row
(``collect_list``: one shuffle of the event rows), and ``rank_neighbours`` scores
a block of users at a time with NumPy in ``mapInArrow``. Exploding every touched
product into its neighbours (users x touched x ``similar_top_n`` rows) and grouping,
anti-joining and ranking them took several shuffles of the stage's biggest
intermediate (335 s of the stage's 463 s at 1M events, bench/results/pipeline.md).

Run: ``python -m jobs.content --help`` or ``spark-submit jobs/content.py --help``.
"""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import partial
from typing import Callable, Iterator, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.candidates import as_candidates, model_version, replace_algorithm_candidates
from jobs.cli import run_algorithm_job
from jobs.interactions import check_decay, read_interactions, weighted
from jobs.paths import DataPaths
from jobs.top_n import LISTS_SCHEMA, best_per_row

log = logging.getLogger(__name__)

ALGORITHM = "content"

TEXT_FEATURES = ("title", "name", "description")
# other_features entries left out of documents (see the module docstring).
UNIQUE_KEY_PATTERN = r"^(id|sku|ean|upc|gtin|isbn|mpn|url|.*_(at|id|date|time|ts|url))$"
UNIQUE_VALUE_PATTERN = r"^([+-]?[0-9]+([.,][0-9]+)?|[0-9]{4}-[0-9]{2}-[0-9]{2}.*)$"
# Candidates per list rescored exactly, as a multiple of similar_top_n: a partial score
# is a lower bound, so a few more than kept give the missed tokens a chance to count.
RESCORED_PER_LIST = 4
# Neighbour entries (touched products x their list lengths) one rank_neighbours call
# expands: bounds a task's NumPy arrays (~10 of this length, ~80 MB at 2^20).
SCORED_PER_BLOCK = 1 << 20
# Pair rows (a subject's posting x a product it meets there) one block of similar_lists
# expands: bounds the driver's NumPy arrays (~120 bytes a row, ~240 MB at 2^21, measured).
PAIR_ROWS_PER_BLOCK = 1 << 21
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


class SparseCatalog(NamedTuple):
    """The catalog's sparse vectors as flat arrays (CSR by product). Products are at their
    positions in the catalog-wide sort order (``_sort_key``, then product id); the entries
    of ``product_ids[i]`` are ``terms[offsets[i]:offsets[i + 1]]`` (ascending) with
    ``weights`` alongside. Every posting list is a sub-sequence of that order, so a
    product's rank in a posting list is the order of its position among the list's."""
    product_ids: np.ndarray  # int64, one per position
    offsets: np.ndarray      # int64, len(product_ids) + 1
    terms: np.ndarray        # int64, ascending within each product
    weights: np.ndarray      # float64, non-zero


def sparse_catalog(product_ids: np.ndarray, lengths: np.ndarray, terms: np.ndarray,
                   weights: np.ndarray) -> SparseCatalog:
    """SparseCatalog from products given in sort order, ``product_ids[i]`` owning
    ``lengths[i]`` consecutive entries of ``terms`` and ``weights``."""
    owner = np.repeat(np.arange(len(product_ids)), lengths)
    order = np.lexsort((terms, owner))  # a product's entries by ascending term, as its vector holds them
    return SparseCatalog(np.asarray(product_ids, np.int64), np.r_[0, np.cumsum(lengths)].astype(np.int64),
                         np.asarray(terms, np.int64)[order], np.asarray(weights, np.float64)[order])


class _PostingLists(NamedTuple):
    """The catalog's entries grouped by term: ``id_ranks`` (the product's rank by id) and
    ``weights`` of each posting list in rank order, and for every entry of the catalog
    (in its CSR order) its product's position, where its list starts in those arrays,
    the list's length (df) and the entry's rank in it; ``position_of`` maps id rank to
    position."""
    id_ranks: np.ndarray
    weights: np.ndarray
    owner: np.ndarray
    start: np.ndarray
    df: np.ndarray
    rank: np.ndarray
    position_of: np.ndarray


def _posting_lists(catalog: SparseCatalog) -> _PostingLists:
    owner = np.repeat(np.arange(len(catalog.product_ids)), np.diff(catalog.offsets))
    by_term = np.lexsort((owner, catalog.terms))
    terms = catalog.terms[by_term]
    first = np.r_[True, terms[1:] != terms[:-1]] if len(terms) else np.zeros(0, bool)
    list_of = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    df = np.diff(np.r_[starts, len(terms)])
    start, length, rank = (np.empty(len(terms), np.int64) for _ in range(3))
    start[by_term] = starts[list_of]
    length[by_term] = df[list_of]
    rank[by_term] = np.arange(len(terms)) - starts[list_of]
    position_of = np.argsort(catalog.product_ids, kind="stable")
    id_rank = np.empty(len(position_of), np.int64)
    id_rank[position_of] = np.arange(len(position_of))
    return _PostingLists(id_rank[owner[by_term]], catalog.weights[by_term], owner, start, length, rank, position_of)


def _best_first(sorted_groups: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The order of rows sorted by (group, id) that sorts them by (group, value desc, id):
    two stable single-key sorts (a three-key lexsort took most of similar_lists' time)."""
    order = np.argsort(-values, kind="stable")
    return order[np.argsort(sorted_groups[order], kind="stable")]


def _window_partners(rank: np.ndarray, df: np.ndarray, block: int) -> tuple[np.ndarray, ...]:
    """Per posting at ``rank`` of a list of ``df``: the rank ranges ``[lo, hi)`` of the
    postings it meets (the module docstring), as (first_lo, first_hi, shift_lo, shift_hi).
    The first range is its window of the first cut (itself included); the second is the
    part of its shifted window on the other side of a first-cut boundary (the shifted cut
    adds only the pairs the first cut split). A list of at most ``block`` is one window."""
    half = block // 2
    long = df > block
    window = rank // block
    first_lo = np.where(long, window * block, 0)
    first_hi = np.where(long, np.minimum((window + 1) * block, df), df)
    shifted = (rank + half) // block
    cut = shifted * block  # the first-cut boundary inside shifted window `shifted`
    before_cut = rank < cut
    shift_lo = np.where(before_cut, cut, np.maximum(cut - half, 0))
    shift_hi = np.where(before_cut, np.minimum((shifted + 1) * block - half, df), cut)
    shift_hi = np.where(long, np.maximum(shift_hi, shift_lo), shift_lo)
    return first_lo, first_hi, shift_lo, shift_hi


def _expand(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(owner, value): every ``value`` in ``[lo[i], hi[i])`` with its ``i``, in order."""
    counts = hi - lo
    owner = np.repeat(np.arange(len(lo)), counts)
    return owner, np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts - lo, counts)


def _first_per_group(sorted_groups: np.ndarray, n: int) -> np.ndarray:
    """Mask of the first ``n`` rows of each run of equal values of ``sorted_groups``."""
    if len(sorted_groups) == 0:
        return np.zeros(0, bool)
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    return np.arange(len(sorted_groups)) - np.repeat(starts, np.diff(np.r_[starts, len(sorted_groups)])) < n


def _best_candidates(catalog: SparseCatalog, lists: _PostingLists, first: int, last: int, block: int,
                     keep: int) -> tuple[np.ndarray, np.ndarray]:
    """(subject, similar) positions: for each product at positions ``[first, last)``, its
    ``keep`` best partners by partial score (``w_a * w_b`` summed over the tokens through
    which they met, in ascending term order), ties to the smaller product id."""
    lo, hi = catalog.offsets[first], catalog.offsets[last]
    first_lo, first_hi, shift_lo, shift_hi = _window_partners(lists.rank[lo:hi], lists.df[lo:hi], block)
    # An entry's two ranges side by side, entries in CSR order (subject, then term ascending): the
    # stable sort by pair below then sums each pair's terms in ascending term order.
    range_of, partner_rank = _expand(np.column_stack([first_lo, shift_lo]).ravel(),
                                     np.column_stack([first_hi, shift_hi]).ravel())
    entry = range_of // 2
    not_self = partner_rank != lists.rank[lo + entry]
    entry, partner_rank = entry[not_self], partner_rank[not_self]
    at = lists.start[lo + entry] + partner_rank
    subject = lists.owner[lo + entry]
    n = len(catalog.product_ids)
    # Keyed by the partner's id rank, so the pairs come out sorted by (subject, partner id).
    pair = subject * n + lists.id_ranks[at]
    order = np.argsort(pair, kind="stable")
    pair, partial = _sum_runs(pair[order], (catalog.weights[lo + entry] * lists.weights[at])[order])
    subject, similar = pair // n, lists.position_of[pair % n]
    best = _best_first(subject, partial)
    kept = np.sort(best[_first_per_group(subject[best], keep)])  # back to (subject, partner id) order
    return subject[kept], similar[kept]


def _entry_keys(catalog: SparseCatalog) -> tuple[np.ndarray, int]:
    """(keys, base): ``position * base + term`` of every entry, ascending (CSR order)."""
    base = int(catalog.terms.max()) + 1 if len(catalog.terms) else 1
    owner = np.repeat(np.arange(len(catalog.product_ids), dtype=np.int64), np.diff(catalog.offsets))
    return owner * base + catalog.terms, base


def exact_scores(catalog: SparseCatalog, subject: np.ndarray, similar: np.ndarray,
                 entry_keys: tuple[np.ndarray, int] | None = None) -> np.ndarray:
    """The dot product of each (subject, similar) pair of positions, in double, summed
    over the subject's terms in ascending order from 0.0 (as Spark's ``aggregate`` over
    the subject's map entries did, so the same bits). ``entry_keys`` is
    ``_entry_keys(catalog)``, passed in to build it once for many calls."""
    keys, key_base = entry_keys or _entry_keys(catalog)
    starts, counts = catalog.offsets[subject], catalog.offsets[subject + 1] - catalog.offsets[subject]
    pair, entry = _expand(starts, starts + counts)
    wanted = similar[pair] * key_base + catalog.terms[entry]
    found = np.minimum(np.searchsorted(keys, wanted), max(len(keys) - 1, 0))
    other = np.where(keys[found] == wanted, catalog.weights[found], 0.0)
    return np.bincount(pair, weights=catalog.weights[entry] * other, minlength=len(subject))


def similar_lists(catalog: SparseCatalog, block: int, top_n: int, rescored: int,
                  budget: int = PAIR_ROWS_PER_BLOCK) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each product's ``top_n`` most similar products (the module docstring): candidates
    from the windowed posting lists, the ``rescored`` best by partial score rescored
    exactly, the best kept by (score desc, product id asc). Returns ``(subjects,
    lengths, ids, scores)``: subject ids in catalog order (those with a candidate),
    their list lengths, and the concatenated lists (ids int64, scores double).

    Products are taken a block at a time, a block holding about ``budget`` pair rows
    (one per posting of a subject and product it meets through that posting).
    """
    lists, entry_keys = _posting_lists(catalog), _entry_keys(catalog)
    ranges = _window_partners(lists.rank, lists.df, block)
    per_entry = (ranges[1] - ranges[0]) + (ranges[3] - ranges[2])
    owner = np.repeat(np.arange(len(catalog.product_ids)), np.diff(catalog.offsets))
    bounds = _row_blocks(np.bincount(owner, weights=per_entry, minlength=len(catalog.product_ids)), budget)
    parts = []
    for first, last in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        subject, similar = _best_candidates(catalog, lists, first, last, block, rescored)
        score = exact_scores(catalog, subject, similar, entry_keys)
        ids = catalog.product_ids[similar]
        best = _best_first(subject, score)
        kept = best[_first_per_group(subject[best], top_n)]
        parts.append((subject[kept], ids[kept], score[kept]))
    subject, ids, score = (np.concatenate([p[i] for p in parts]) if parts else np.zeros(0)
                           for i in range(3))
    subject = subject.astype(np.int64)
    lengths = np.bincount(subject, minlength=len(catalog.product_ids))
    listed = lengths > 0
    return catalog.product_ids[listed], lengths[listed], ids.astype(np.int64), score.astype(np.float64)


def collect_sparse_catalog(vectors: DataFrame) -> SparseCatalog:
    """The non-zero vectors of ``vectors`` on the driver (one Arrow collect), in sort order:
    Spark sorts by ``(sort_key, product_id)``, the order the posting lists are ranked in."""
    table = (_sparse(vectors).orderBy("sort_key", "product_id")
             .select(F.col("product_id").cast("long").alias("product_id"),
                     F.col("entries.term").alias("terms"), F.col("entries.weight").alias("weights"))).toArrow()
    terms, weights = (table.column(name).combine_chunks() for name in ("terms", "weights"))
    return sparse_catalog(table.column("product_id").to_numpy(),
                          pc.list_value_length(terms).to_numpy(zero_copy_only=False),
                          pc.list_flatten(terms).to_numpy(zero_copy_only=False),
                          pc.list_flatten(weights).to_numpy(zero_copy_only=False))


# As the Spark formulation's top_n_lists typed them (nullability included), so callers see no change.
SIMILAR_SCHEMA = T.StructType([
    T.StructField("subject_id", T.StringType(), False),
    T.StructField("product_ids", T.ArrayType(T.LongType(), containsNull=False), False),
    T.StructField("scores", T.ArrayType(T.FloatType(), containsNull=True), False)])


def similar_products(vectors: DataFrame, params: ContentParams,
                     budget: int = PAIR_ROWS_PER_BLOCK) -> DataFrame:
    """``(subject_id, product_ids, scores)``: each product's ``similar_top_n`` most similar
    products, itself excluded, scored by their exact cosine (see the module docstring):
    the best candidates by partial score are rescored with the full dot product.

    Collects the vectors to the driver (a Spark job runs here), computes the lists with
    NumPy (``similar_lists``) and returns them as a DataFrame of a pyarrow table.
    Memory on the driver: the catalog, ~72 bytes per posting (CSR 16, the term-grouped
    arrays 48, entry keys 8); and per block of products about ``budget`` pair rows of
    ~120 bytes each (ranges expanded to int64 entry, rank, id-rank and pair keys,
    float64 contributions, sort orders): 236 MB peak measured at the default 2^21. A
    single product whose postings alone meet more than ``budget`` rows makes its block
    larger (at most ``tokens x 1.5 x block_size`` rows). Time is linear in the pair
    rows (about ``postings x 1.5 x block_size``, both ways: 57 s for 556k postings,
    bench/results/content_similar.md); the catalog stops being cheap to hold at tens
    of millions of postings (1M products x 30 tokens ~ 2.2 GB): beyond that,
    run ``similar_lists`` per range of subject positions in ``mapInArrow`` tasks with
    the catalog broadcast (each block only reads it), or go back to the Spark joins
    of bench/content_similar/spark_formulation.py.
    """
    spark = vectors.sparkSession
    catalog = collect_sparse_catalog(vectors)
    subjects, lengths, ids, scores = similar_lists(catalog, params.block_size, params.similar_top_n,
                                                   RESCORED_PER_LIST * params.similar_top_n, budget)
    offsets = pa.array(np.r_[0, np.cumsum(lengths)].astype(np.int32))
    table = pa.table([pc.cast(pa.array(subjects, pa.int64()), pa.string()),
                      pa.ListArray.from_arrays(offsets, pa.array(ids, pa.int64())),
                      pa.ListArray.from_arrays(offsets, pa.array(scores.astype(np.float32)))],
                     names=SIMILAR_SCHEMA.fieldNames())
    return spark.createDataFrame(table, schema=SIMILAR_SCHEMA)


class NeighbourLists(NamedTuple):
    """Neighbour lists as flat arrays (CSR). ``catalog`` holds every product id that is
    in a list, as subject or as neighbour, ascending; the list of ``catalog[i]`` is
    ``neighbours[offsets[i]:offsets[i + 1]]`` (positions in ``catalog``), with
    ``similarities`` alongside (as collected: float32 from CANDIDATES-shaped lists)."""
    catalog: np.ndarray       # int64, ascending, unique
    offsets: np.ndarray       # int64, len(catalog) + 1
    neighbours: np.ndarray    # int32 positions in catalog
    similarities: np.ndarray  # float32 (or float64), one per neighbour


def neighbour_lists(subjects: np.ndarray, lengths: np.ndarray, neighbour_ids: np.ndarray,
                    similarities: np.ndarray) -> NeighbourLists:
    """NeighbourLists from lists given as ``subjects[j]`` owning ``lengths[j]``
    consecutive entries of ``neighbour_ids`` and ``similarities`` (a subject given twice
    owns both lists, as a join on it would)."""
    subjects, neighbour_ids = subjects.astype(np.int64), neighbour_ids.astype(np.int64)
    catalog = np.unique(np.concatenate([subjects, neighbour_ids]))
    owner = np.searchsorted(catalog, np.repeat(subjects, lengths))
    order = np.argsort(owner, kind="stable")
    counts = np.bincount(owner, minlength=len(catalog))
    return NeighbourLists(catalog=catalog, offsets=np.r_[0, np.cumsum(counts)].astype(np.int64),
                          neighbours=np.searchsorted(catalog, neighbour_ids[order]).astype(np.int32),
                          similarities=similarities[order])


def collect_neighbour_lists(similar: DataFrame) -> NeighbourLists:
    """The ``(subject_id, product_ids, scores)`` lists of ``similar`` on the driver (one Arrow collect)."""
    table = (similar.select(F.col("subject_id").cast("long").alias("subject_id"), "product_ids", "scores")
             .where(F.col("subject_id").isNotNull() & F.col("product_ids").isNotNull())).toArrow()
    ids, scores = (table.column(name).combine_chunks() for name in ("product_ids", "scores"))
    return neighbour_lists(table.column("subject_id").to_numpy(),
                           pc.list_value_length(ids).to_numpy(zero_copy_only=False),
                           pc.list_flatten(ids).to_numpy(zero_copy_only=False),
                           pc.list_flatten(scores).to_numpy(zero_copy_only=False))


def _sum_runs(sorted_keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct keys, sum of the values of each): sums taken one value after another in
    the given order (bincount), so equal terms in the same order give equal sums."""
    starts = np.r_[True, sorted_keys[1:] != sorted_keys[:-1]] if len(sorted_keys) else np.zeros(0, bool)
    return sorted_keys[starts], np.bincount(np.cumsum(starts) - 1, weights=values, minlength=int(starts.sum()))


def rank_neighbours(row_of_touched: np.ndarray, touched_ids: np.ndarray, touched_weights: np.ndarray,
                    rows: int, lists: NeighbourLists, top_n: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Content scores of many rows (users) at once.

    Touched entry ``j`` says row ``row_of_touched[j]`` touched product ``touched_ids[j]``
    with weight ``touched_weights[j]`` (a product touched twice by a row weighs the sum).
    A row's score of product ``c`` is ``sum over its touched t of weight(t) * sim(t, c)``
    over the neighbour lists ``lists``, summed in double in ascending order of ``t``;
    the row's touched products are left out. Returns, for each row in order, its best
    ``top_n`` products, ties to the smaller id, as ``(lengths, ids, scores)``
    (concatenated rows; a row with nothing left has length 0), as ``top_n_lists``
    orders them (its scores are doubles until it casts them to float).
    """
    n = len(lists.catalog)
    if n == 0 or len(touched_ids) == 0:
        return np.zeros(rows, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)
    # Keys are row * n + catalog position. A touched product in no list has no neighbours and
    # is nobody's neighbour: it adds nothing and there is nothing to leave out.
    at = np.minimum(np.searchsorted(lists.catalog, touched_ids), n - 1)
    listed = lists.catalog[at] == touched_ids
    key = row_of_touched[listed].astype(np.int64) * n + at[listed]
    order = np.argsort(key, kind="stable")
    touched, weight = _sum_runs(key[order], touched_weights[listed][order].astype(np.float64))

    at = touched % n
    starts, counts = lists.offsets[at], lists.offsets[at + 1] - lists.offsets[at]
    entry = np.repeat(starts - (np.cumsum(counts) - counts), counts) + np.arange(counts.sum())
    candidate = np.repeat(touched - at, counts) + lists.neighbours[entry]
    contribution = np.repeat(weight, counts) * lists.similarities[entry].astype(np.float64)
    # Stable: each candidate's contributions stay in ascending order of the touched product.
    order = np.argsort(candidate, kind="stable")
    candidate, score = _sum_runs(candidate[order], contribution[order])
    hit = np.minimum(np.searchsorted(touched, candidate), len(touched) - 1)
    unseen = touched[hit] != candidate
    candidate, score = candidate[unseen], score[unseen]

    return best_per_row(candidate // n, lists.catalog[candidate % n], score, rows, top_n)




def _row_blocks(entries_per_row: np.ndarray, budget: int) -> np.ndarray:
    """Boundaries ``[0, ..., rows]`` of consecutive rows with about ``budget`` entries each
    (a block goes past it by at most its last row)."""
    before = np.cumsum(entries_per_row) - entries_per_row
    block = before // budget
    return np.r_[0, np.flatnonzero(block[1:] != block[:-1]) + 1, len(entries_per_row)]


def _rank_batches(batches: Iterator[pa.RecordBatch], shared, top_n: int,
                  budget: int = SCORED_PER_BLOCK) -> Iterator[pa.RecordBatch]:
    lists = NeighbourLists(*shared.value)
    list_lengths = np.diff(lists.offsets)
    for batch in batches:
        users, touched = batch.column(0), batch.column(1)
        if batch.num_rows == 0:
            continue
        items = touched.flatten()
        row = pc.list_parent_indices(touched).to_numpy(zero_copy_only=False).astype(np.int64)
        ids = items.field("product_id").to_numpy(zero_copy_only=False)
        weights = items.field("weight").to_numpy(zero_copy_only=False)
        # Cut the batch into blocks of rows whose neighbour entries fit the budget.
        at = np.minimum(np.searchsorted(lists.catalog, ids), max(len(lists.catalog) - 1, 0))
        entries = (np.where(lists.catalog[at] == ids, list_lengths[at], 0) if len(lists.catalog)
                   else np.zeros(len(ids), np.int64))
        bounds = _row_blocks(np.bincount(row, weights=entries, minlength=batch.num_rows), budget)
        for first, last in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            lo, hi = np.searchsorted(row, [first, last])
            lengths, product_ids, scores = rank_neighbours(row[lo:hi] - first, ids[lo:hi], weights[lo:hi],
                                                           last - first, lists, top_n)
            listed = lengths > 0
            if not listed.any():
                continue
            offsets = pa.array(np.r_[0, np.cumsum(lengths[listed])].astype(np.int32))
            yield pa.RecordBatch.from_arrays(
                [pc.cast(users.slice(first, last - first).filter(pa.array(listed)), pa.string()),
                 pa.ListArray.from_arrays(offsets, pa.array(product_ids, pa.int64())),
                 pa.ListArray.from_arrays(offsets, pa.array(scores.astype(np.float32)))],
                ["subject_id", "product_ids", "scores"])


def user_content_lists(weighted_rows: DataFrame, similar: DataFrame, params: ContentParams,
                       block_entries: int = SCORED_PER_BLOCK) -> DataFrame:
    """``(subject_id, product_ids, scores)`` per user: ``score(c) = sum over touched t of
    weight(t) * sim(t, c)``, over the neighbour lists ``similar``; touched products left
    out; the ``top_n`` best, ties to the smaller id (as ``top_n_lists``); no row for a
    user with nothing left.

    Collects ``similar`` to the driver (a Spark job runs here) and broadcasts it as
    NeighbourLists; each user's ``(product_id, weight)`` rows are gathered into one row
    and ranked by ``rank_neighbours``, about ``block_entries`` neighbour entries at a time.
    Scores are the join formulation's (doubles, cast to float at the end) except that
    its sums ran in Spark's arrival order: with three or more terms that order could
    move a score's last bit, and so split an exact tie, from run to run; here the
    order is fixed (ascending touched id).

    Memory: the lists take 16 bytes per product (int64 id and offset) and 8 per
    neighbour entry (int32 position, float32 similarity): 100k products x 50
    neighbours ~ 42 MB, held on the driver (a few times that while collecting),
    serialised in the JVM's block manager, and once in every Python worker that runs
    a task (2 on 2 cores). 1M products x 50 is ~420 MB per copy, about where this
    stops being cheap; beyond it (or on executors short of memory) do not broadcast:
    join the users' touched rows to the lists by product in Spark, each list kept an
    array, gather them per user and rank each user's own lists the same way
    (``neighbour_lists`` over just those). A block's arrays are ~10 x 8 bytes per
    neighbour entry (~80 MB at the default), more only for a single user whose
    touched products alone have more entries than ``block_entries``.
    """
    spark = weighted_rows.sparkSession
    lists = collect_neighbour_lists(similar)
    # A plain tuple: under `python -m jobs.content` the NamedTuple's class lives in __main__,
    # which the Python workers cannot unpickle.
    shared = spark.sparkContext.broadcast(tuple(lists))
    per_user = (weighted_rows.groupBy("user_id").agg(F.collect_list(F.struct(
        F.col("product_id").cast("long").alias("product_id"),
        F.col("weight").cast("double").alias("weight"))).alias("touched")))
    return per_user.mapInArrow(partial(_rank_batches, shared=shared, top_n=params.top_n, budget=block_entries),
                              LISTS_SCHEMA)


def content_candidates(interaction_rows: DataFrame, products: DataFrame, as_of: datetime,
                       params: ContentParams, stage: Stage = _no_stage,
                       for_users: DataFrame | None = None) -> DataFrame:
    """All content candidate lists (product and user) in the CANDIDATES layout.
    ``for_users`` (``user_id`` rows): user lists for these users only, each the same as in a run for everyone.

    ``stage(name, frame)`` sees each intermediate frame and returns the one to go on
    with: run_content caches, counts and times them there; the default passes through.
    """
    version = model_version(ALGORITHM, as_of, asdict(params))
    documents = stage("documents", product_documents(products))
    vectors = stage("tfidf", tfidf_vectors(documents, params))
    similar = stage("similar products", similar_products(vectors, params))
    touched = weighted(interaction_rows, as_of, params)
    if for_users is not None:
        touched = touched.join(for_users, "user_id", "left_semi")
    users = stage("user lists", user_content_lists(touched, similar, params))
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
