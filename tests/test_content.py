"""Content (TF-IDF) candidates on a hand-made catalog and a generated one.

Hand-made catalog (price bucket in brackets):

    1  electronics.phone   voltix   black  [100-200]  added_at (skipped)
    2  electronics.phone   voltix   black  [200-500]
    3  electronics.phone   nexa     white  [500-1000]
    4  electronics.laptop  orbitron silver [500-1000]
    5  electronics.laptop  kivo     grey   [1000-2000]
    6  home.lamp           hearthly red    [20-50]
    7  home.lamp           hearthly red    [20-50]     same document as 6
    8  home.sofa           oakline  beige  [500-1000]
    9  fashion.shoes       urbana   blue   [50-100]
   10  fashion.shoes       urbana   green  [50-100]
   11  fashion.dress       kestrel  title "Summer linen dress", no price
   12  electronics.phone   voltix   black  [100-200]   inactive
   13  electronics.tablet  voltix   black  [200-500]   new: no events at all

So product 1 shares leaf category, brand and colour with 2; leaf category with 3;
only the department with 4 and 5; nothing with 6-11.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from jobs.candidates import model_version
from jobs.candidates import top_n_lists
from jobs.content import similar_lists as numpy_similar_lists  # the name similar_lists is a fixture here
from jobs.content import (ContentParams, _window_partners, neighbour_lists, params_from_settings,
                          product_documents, rank_neighbours, similar_products, sparse_catalog,
                          tfidf_vectors, user_content_lists)
from jobs.interactions import weighted
from schemas import EVENTS_STORED, PRODUCTS_STORED, spark_schema
from schemas.settings import load_conf
from tests.candidate_contract import assert_candidates_contract

pytestmark = pytest.mark.spark

AS_OF = datetime(2026, 10, 1, tzinfo=timezone.utc)
WEIGHTS = {"view": 1.0, "purchase": 8.0}
PARAMS = ContentParams(num_features=1 << 18, top_n=20, similar_top_n=20, block_size=200,
                       half_life_days=30.0, event_weights=WEIGHTS)

CATALOG = [  # (id, category, price, active, other_features)
    (1, "electronics.phone", 199.0, True, {"brand": "voltix", "color": "black", "added_at": "2025-01-01T00:00:00Z"}),
    (2, "electronics.phone", 249.0, True, {"brand": "voltix", "color": "black"}),
    (3, "electronics.phone", 649.0, True, {"brand": "nexa", "color": "white"}),
    (4, "electronics.laptop", 899.0, True, {"brand": "orbitron", "color": "silver"}),
    (5, "electronics.laptop", 1299.0, True, {"brand": "kivo", "color": "grey"}),
    (6, "home.lamp", 45.0, True, {"brand": "hearthly", "color": "red"}),
    (7, "home.lamp", 39.0, True, {"brand": "hearthly", "color": "red"}),
    (8, "home.sofa", 899.0, True, {"brand": "oakline", "color": "beige"}),
    (9, "fashion.shoes", 89.0, True, {"brand": "urbana", "color": "blue"}),
    (10, "fashion.shoes", 79.0, True, {"brand": "urbana", "color": "green"}),
    (11, "fashion.dress", None, True, {"brand": "kestrel", "title": "Summer linen dress"}),
    (12, "electronics.phone", 199.0, False, {"brand": "voltix", "color": "black"}),
    (13, "electronics.tablet", 349.0, True, {"brand": "voltix", "color": "black"}),
]

EVENT_ROWS = [  # (user, type, product, age)
    (100, "purchase", 1, timedelta(days=1)),
    (100, "view", 6, timedelta(days=1)),
    (200, "view", 9, timedelta(0)),
    (200, "view", 10, timedelta(days=2)),
    (300, "purchase", 3, -timedelta(hours=1)),  # after as_of: ignored, so user 300 has no list
]


def products_frame(spark, rows):
    return spark.createDataFrame([(p, c, price, active, features, None, AS_OF)
                                  for p, c, price, active, features in rows],
                                 spark_schema(PRODUCTS_STORED))


def interaction_frame(spark, rows):
    return spark.createDataFrame([(u, t, p, AS_OF - age) for u, t, p, age in rows],
                                 "user_id long, event_type string, product_id long, timestamp timestamp")


def by_subject(lists_df) -> dict[int, tuple[list[int], list[float]]]:
    return {int(r["subject_id"]): (list(r["product_ids"]), list(r["scores"])) for r in lists_df.collect()}


def reference_cosines(tokens: dict[int, list[str]]) -> dict[tuple[int, int], float]:
    """Brute force from the token lists alone: binary TF, idf = ln((n+1)/(df+1)), L2, all pairs."""
    n = len(tokens)
    df = Counter(t for toks in tokens.values() for t in set(toks))
    vectors = {}
    for p, toks in tokens.items():
        v = {t: math.log((n + 1) / (df[t] + 1)) for t in set(toks)}
        norm = math.sqrt(sum(x * x for x in v.values()))
        vectors[p] = {t: x / norm for t, x in v.items()} if norm else {}
    return {(a, b): sum(x * vectors[b].get(t, 0.0) for t, x in vectors[a].items())
            for a in vectors for b in vectors if a != b}


def vector_cosines(vector_rows) -> tuple[np.ndarray, np.ndarray]:
    """(product ids, cosine matrix) from Spark's own vectors, densified on the terms in use."""
    ids = np.array([r["product_id"] for r in vector_rows])
    terms = sorted({int(i) for r in vector_rows for i in r["features"].indices})
    column = {t: j for j, t in enumerate(terms)}
    dense = np.zeros((len(ids), len(terms)))
    for i, r in enumerate(vector_rows):
        for t, x in zip(r["features"].indices, r["features"].values):
            dense[i, column[int(t)]] = x
    return ids, dense @ dense.T


def reference_top(cosines: dict[tuple[int, int], float], product: int, k: int) -> list[tuple[int, float]]:
    scored = [(b, s) for (a, b), s in cosines.items() if a == product and s > 1e-12]
    return sorted(scored, key=lambda x: (-x[1], x[0]))[:k]


@pytest.fixture(scope="module")
def products(spark):
    return products_frame(spark, CATALOG)


@pytest.fixture(scope="module")
def documents(products):
    return {r["product_id"]: list(r["tokens"]) for r in product_documents(products).collect()}


@pytest.fixture(scope="module")
def vectors(products):
    return tfidf_vectors(product_documents(products), PARAMS).cache()


@pytest.fixture(scope="module")
def similar(vectors):
    return similar_products(vectors, PARAMS).cache()


@pytest.fixture(scope="module")
def similar_lists(similar):
    return by_subject(similar)


@pytest.fixture(scope="module")
def user_lists(spark, similar):
    rows = weighted(interaction_frame(spark, EVENT_ROWS), AS_OF, PARAMS)
    return by_subject(user_content_lists(rows, similar, PARAMS))


# --- documents ---------------------------------------------------------------

def test_document_tokens_for_a_hand_written_product(spark):
    """Category prefixes, key=value (lower-cased, blanks as _), a price bucket and title words;
    unique-ish entries (added_at, sku, numbers) are left out."""
    features = {"Brand": "Voltix", "color": "Space Grey", "added_at": "2026-01-01T00:00:00Z", "sku": "AB-123",
                "weight_g": "180", "title": "Voltix X1 Smart-Phone 5"}
    docs = product_documents(products_frame(spark, [(1, "Electronics.Phone", 199.0, True, features)])).collect()
    assert len(docs) == 1
    assert sorted(docs[0]["tokens"]) == sorted([
        "cat:electronics", "cat:electronics.phone", "brand=voltix", "color=space_grey", "price:100-200",
        "word:voltix", "word:x1", "word:smart", "word:phone"])


def test_price_buckets_are_log_scale_and_absent_without_price(spark):
    """1-2-5 buckets per decade, lower edge inclusive; no price token when the price is null."""
    rows = [(i, "a", price, True, None) for i, price in enumerate([0.5, 1.0, 9.99, 10.0, 49.99, 2500.0, None])]
    docs = {r["product_id"]: [t for t in r["tokens"] if t.startswith("price:")]
            for r in product_documents(products_frame(spark, rows)).collect()}
    assert docs == {0: ["price:0-1"], 1: ["price:1-2"], 2: ["price:5-10"], 3: ["price:10-20"],
                    4: ["price:20-50"], 5: ["price:2000-5000"], 6: []}


def test_inactive_products_get_no_document(documents):
    """Inactive product 12 has no document; every active one has one."""
    assert sorted(documents) == [p for p, *_, active, _ in CATALOG if active]
    assert "cat:electronics.phone" in documents[1] and not any(t.startswith("added_at") for t in documents[1])


# --- similar products ----------------------------------------------------------

def test_similar_ranks_brand_and_category_above_department_only(similar_lists):
    """For product 1: 2 (same leaf, brand, colour) first, 3 (same leaf) above 4 and 5 (department only);
    products sharing nothing, and the inactive twin 12, are absent; 1 is not in its own list."""
    ids, scores = similar_lists[1]
    assert ids[0] == 2
    assert ids.index(3) < ids.index(4) and ids.index(3) < ids.index(5)
    assert not {1, 6, 7, 8, 9, 10, 11, 12} & set(ids)
    assert all(p not in ids for p, (ids, _) in similar_lists.items())


def test_similarity_equals_brute_force_cosine(documents, vectors, similar_lists):
    """Every list equals the brute-force top-k: scores by a TF-IDF computed from the tokens by hand,
    and by numpy over Spark's own vectors."""
    by_hand = reference_cosines(documents)
    ids, matrix = vector_cosines(vectors.collect())
    row = {p: i for i, p in enumerate(ids)}
    assert by_hand[(1, 2)] == pytest.approx(matrix[row[1], row[2]], rel=1e-9)
    for product in documents:
        expected = reference_top(by_hand, product, PARAMS.similar_top_n)
        got_ids, got_scores = similar_lists.get(product, ([], []))
        assert got_scores == pytest.approx([s for _, s in expected], rel=1e-6), product
        assert got_scores == pytest.approx([matrix[row[product], row[b]] for b in got_ids], rel=1e-6), product


def test_similar_lists_are_capped(vectors, documents):
    """similar_top_n = 2 keeps the two best of each list."""
    capped = by_subject(similar_products(vectors, ContentParams(similar_top_n=2, event_weights=WEIGHTS)))
    by_hand = reference_cosines(documents)
    assert max(len(ids) for ids, _ in capped.values()) == 2
    for product, (ids, scores) in capped.items():
        assert scores == pytest.approx([s for _, s in reference_top(by_hand, product, 2)], rel=1e-6)


def test_new_product_without_events_gets_neighbours(similar_lists):
    """Product 13 never had an event, yet has a list led by its brand-and-colour twins."""
    ids, _ = similar_lists[13]
    assert set(ids[:2]) == {1, 2}


# --- user lists ----------------------------------------------------------------

def test_user_scores_are_weighted_sums_over_neighbours(similar_lists, user_lists):
    """score(c) = sum over touched t of decayed weight(t) * sim(t, c); touched products left out."""
    decay = 0.5 ** (1 / PARAMS.half_life_days)
    touched = {1: 8.0 * decay, 6: 1.0 * decay}
    expected: dict[int, float] = {}
    for t, w in touched.items():
        for c, s in zip(*similar_lists[t]):
            expected[c] = expected.get(c, 0.0) + w * s
    for t in touched:
        expected.pop(t, None)
    ids, scores = user_lists[100]
    assert dict(zip(ids, scores)) == pytest.approx(expected, rel=1e-6)
    assert not set(touched) & set(ids)


def test_purchased_neighbours_outrank_viewed_ones(similar_lists, user_lists):
    """Product 7 is a perfect match of the viewed 6 (cosine 1), yet 2, a weaker match of the
    purchased 1, ranks above it; the new product 13 is recommended too."""
    assert similar_lists[6][0][0] == 7 and similar_lists[6][1][0] == pytest.approx(1.0)
    ids, _ = user_lists[100]
    assert ids[0] == 2 and ids.index(2) < ids.index(7)
    assert 13 in ids


def test_users_get_only_unseen_neighbours(user_lists):
    """User 200 saw both shoes, each the other's best match: neither is listed. Events after
    as_of count for nothing, so user 300 has no list."""
    assert not {9, 10} & set(user_lists[200][0])
    assert 300 not in user_lists


# --- user lists: the NumPy ranking against the definition ------------------------

def test_rank_neighbours_by_hand():
    """Lists 1: [2 .5, 3 .25], 2: [1 .5, 3 .75], 4: [5 1.0]. Row 0 touched 1 twice (2 + 1) and 2
    (1): 3 scores 3 * .25 + 1 * .75. Row 1 touched an unlisted product. Row 2 touched 4 (.5) and
    1 (1): 2 and 5 tie at .5, the smaller id first, 3 cut by top_n. Row 3 touched 4 and its only
    neighbour 5: nothing left."""
    lists = neighbour_lists(np.array([1, 2, 4]), np.array([2, 2, 1]), np.array([2, 3, 1, 3, 5]),
                            np.array([0.5, 0.25, 0.5, 0.75, 1.0], dtype=np.float32))
    lengths, ids, scores = rank_neighbours(
        row_of_touched=np.array([0, 0, 0, 1, 2, 2, 3, 3]), touched_ids=np.array([1, 2, 1, 9, 4, 1, 4, 5]),
        touched_weights=np.array([2.0, 1.0, 1.0, 3.0, 0.5, 1.0, 1.0, 1.0]), rows=4, lists=lists, top_n=2)
    assert lengths.tolist() == [1, 0, 2, 0]
    assert ids.tolist() == [3, 2, 5]
    assert scores.tolist() == [1.5, 0.5, 0.5]


def random_lists(rng, products: int, exact: bool) -> dict[int, list[tuple[int, float]]]:
    """Neighbour lists of products 0..products-1 (some empty, some products only neighbours);
    similarities in sixteenths (exact sums in any order, many ties) or any float32."""
    lists = {}
    for p in range(products):
        others = [q for q in range(products + 5) if q != p]
        chosen = rng.choice(others, size=int(rng.integers(0, 9)), replace=False).tolist()
        sims = (rng.integers(1, 17, len(chosen)) / 16 if exact else rng.random(len(chosen))).astype(np.float32)
        if chosen:
            lists[p] = list(zip(chosen, sims.tolist()))
    return lists


def random_touches(rng, lists, users: int, products: int, exact: bool) -> list[list[tuple[int, float]]]:
    """Per user, (product, weight) events: repeats, products in no list, and a few users who
    touched the closure of a product (every neighbour of what they touched is touched)."""
    weights = (lambda n: rng.choice([0.5, 1.0, 2.0, 8.0], n)) if exact else (lambda n: rng.random(n) * 8)
    rows = []
    for u in range(users):
        if u % 25 == 0:
            closure, todo = set(), [int(rng.choice(list(lists)))]
            while todo:
                p = todo.pop()
                if p not in closure:
                    closure.add(p)
                    todo += [c for c, _ in lists.get(p, [])]
            rows.append(list(zip(sorted(closure), weights(len(closure)).tolist())))
        else:
            touched = rng.integers(0, products + 8, int(rng.integers(1, 9))).tolist()
            rows.append(list(zip(touched, weights(len(touched)).tolist())))
    return rows


def reference_user_lists(lists, rows, top_n):
    """The definition, one user at a time: weights summed per product, then each touched t's
    weight(t) * sim(t, c) added in ascending t; touched left out; best first, ties to the smaller id."""
    out = []
    for events in rows:
        weight: dict[int, float] = {}
        for p, w in events:
            weight[p] = weight.get(p, 0.0) + w
        scores: dict[int, float] = {}
        for t in sorted(weight):
            for c, s in lists.get(t, []):
                scores[c] = scores.get(c, 0.0) + weight[t] * s
        ranked = sorted(((c, s) for c, s in scores.items() if c not in weight), key=lambda x: (-x[1], x[0]))
        out.append(ranked[:top_n])
    return out


@pytest.mark.parametrize("seed,exact", [(1, True), (2, True), (3, False), (4, False)])
def test_rank_neighbours_equals_the_definition(seed, exact):
    """Random lists and users, bit for bit: repeated events, ties, the top_n cut, users whose
    every neighbour is touched (no list), touched products in no list."""
    rng = np.random.default_rng(seed)
    lists = random_lists(rng, products=40, exact=exact)
    rows = random_touches(rng, lists, users=200, products=40, exact=exact)
    subjects = sorted(lists)
    csr = neighbour_lists(np.array(subjects), np.array([len(lists[p]) for p in subjects]),
                          np.array([c for p in subjects for c, _ in lists[p]]),
                          np.array([s for p in subjects for _, s in lists[p]], dtype=np.float32))
    flat = [(r, p, w) for r, events in enumerate(rows) for p, w in events]
    lengths, ids, scores = rank_neighbours(np.array([r for r, _, _ in flat]), np.array([p for _, p, _ in flat]),
                                           np.array([w for _, _, w in flat]), len(rows), csr, top_n=6)
    ends = np.cumsum(lengths)
    got = [list(zip(ids[e - n:e].tolist(), scores[e - n:e].tolist())) for n, e in zip(lengths, ends)]
    expected = reference_user_lists(lists, rows, top_n=6)
    assert got == expected
    assert sum(not row for row in expected) >= 8  # the closure users, at least, have nothing left


def join_formulation(weighted_rows, similar, top_n: int):
    """user_content_lists as it was before the NumPy ranking (commit 334f818): every touched
    product exploded into its neighbours, grouped by (user, product), touched anti-joined, top_n_lists."""
    from pyspark.sql import functions as F

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
    return top_n_lists(unseen, F.col("user_id"), top_n)


def test_user_lists_equal_the_join_formulation(spark):
    """On random lists with many ties (exact sums), the NumPy lists equal the explode-and-join
    ones list for list, ids and float scores, cut into blocks of rows or not; users whose every
    neighbour is touched get no list from either."""
    rng = np.random.default_rng(11)
    lists = random_lists(rng, products=60, exact=True)
    rows = random_touches(rng, lists, users=150, products=60, exact=True)
    similar = spark.createDataFrame(
        [(str(p), [c for c, _ in ls], [s for _, s in ls]) for p, ls in lists.items()],
        "subject_id string, product_ids array<bigint>, scores array<float>")
    weighted_rows = spark.createDataFrame([(1000 + u, p, w) for u, events in enumerate(rows) for p, w in events],
                                          "user_id long, product_id long, weight double")
    params = ContentParams(top_n=5, event_weights=WEIGHTS)
    expected = by_subject(join_formulation(weighted_rows, similar, params.top_n))
    assert by_subject(user_content_lists(weighted_rows, similar, params)) == expected
    assert by_subject(user_content_lists(weighted_rows, similar, params, block_entries=7)) == expected
    assert 1000 not in expected and 150 - len(expected) >= 6  # closure users (every 25th) have no list
    assert any(len(set(scores)) < len(scores) for _, scores in expected.values())  # ties were broken


# --- the whole transform ----------------------------------------------------------

def test_run_content_writes_the_candidates_table(spark, tmp_path):
    """The I/O edge reads the products and events tables and writes product and user lists under
    algorithm content that honour the candidates contract, all of one model version."""
    from jobs.content import run_content
    from jobs.paths import DataPaths

    paths = DataPaths(tmp_path)
    products_frame(spark, CATALOG).write.format("delta").save(paths.table("products"))
    spark.createDataFrame([(u, t, p, AS_OF - age, f"{AS_OF - age:%Y-%m-%d}", "test:0") for u, t, p, age in EVENT_ROWS],
                          spark_schema(EVENTS_STORED)).write.format("delta").save(paths.table("events"))
    counts = run_content(spark, paths, AS_OF, PARAMS)
    assert counts == {"product": 12, "user": 2}
    rows = assert_candidates_contract(spark.read.format("delta").load(paths.table("candidates")))
    assert Counter((r["subject_kind"], r["algorithm"]) for r in rows) == {("product", "content"): 12,
                                                                          ("user", "content"): 2}
    assert {r["model_version"] for r in rows} == {model_version("content", AS_OF, asdict(PARAMS))}
    assert rows[0]["model_version"].startswith("content-20261001T000000Z-")


# --- a generated catalog: windows and category coherence ------------------------------

@pytest.fixture(scope="module")
def generated(spark):
    """A generated 1,000-product catalog (~20 categories of ~50): its {product: category}, the
    (ids, cosine matrix) of its vectors, and its top-10 lists with one window per posting list
    (exact) and with windows of 32 (most category and every department list is longer than that)."""
    from jobs.generate_data import build_world, products_table

    table = products_table(build_world(users=10, products=1000, seed=7).catalog)
    rows = [(r["product_id"], r["category"], r["price"], r["active"], dict(r["other_features"]))
            for r in table.to_pylist()]
    vectors = tfidf_vectors(product_documents(products_frame(spark, rows)), PARAMS).cache()
    lists = {name: by_subject(similar_products(vectors, ContentParams(similar_top_n=10, block_size=block,
                                                                      event_weights=WEIGHTS)))
             for name, block in (("exact", 2000), ("windowed", 32))}
    categories = {p: c for p, c, _, active, _ in rows if active}
    return categories, vector_cosines(vectors.collect()), lists


def test_windowed_posting_lists_score_exactly_and_find_most_neighbours(generated):
    """With one window per posting list the lists are the brute-force top 10. With windows of 32
    each listed score is still the exact cosine, and at least 95 % of the exact top 10 is found."""
    _, (ids, matrix), lists = generated
    row = {p: i for i, p in enumerate(ids)}
    k = 10
    found = 0
    for product in ids:
        sims = matrix[row[product]].copy()
        sims[row[product]] = -1.0
        best_scores = np.sort(sims)[::-1][:k]
        assert lists["exact"][product][1] == pytest.approx(best_scores.tolist(), rel=1e-5, abs=1e-6)
        got_ids, got_scores = lists["windowed"][product]
        assert got_scores == pytest.approx([sims[row[b]] for b in got_ids], rel=1e-5, abs=1e-6)
        found += sum(sims[row[b]] >= best_scores[-1] - 1e-6 for b in got_ids)  # ties at the k-th count
    assert found / (k * len(ids)) >= 0.95


def test_neighbours_share_the_category_far_more_than_chance(generated):
    """The top-10 neighbours share the product's category far more often than two random products do
    (not always: a same-brand, same-colour product of a sibling category can beat a same-category one)."""
    categories, _, lists = generated
    pairs = [(p, q) for p, (ids, _) in lists["exact"].items() for q in ids]
    same = sum(categories[p] == categories[q] for p, q in pairs) / len(pairs)
    sizes = np.array(list(Counter(categories.values()).values()), dtype=float)
    baseline = float((sizes * (sizes - 1)).sum() / (len(categories) * (len(categories) - 1)))
    assert baseline < 0.1 and same > 0.8 and same > 8 * baseline


# --- similar products in NumPy: the windows, brute force, the Spark formulation ----------

def window_pairs_by_definition(df: int, block: int) -> set[tuple[int, int]]:
    """Rank pairs of a posting list of ``df`` that meet, as the Spark join defined them."""
    half = block // 2
    return {(i, j) for i in range(df) for j in range(i + 1, df)
            if df <= block or i // block == j // block or (i + half) // block == (j + half) // block}


@pytest.mark.parametrize("block", [2, 3, 4, 7, 8])
def test_window_partners_are_the_windowed_pairs_each_once(block):
    """Each posting's rank ranges give every pair of the definition, and each pair once from either side."""
    for df in range(1, 4 * block + 3):
        first_lo, first_hi, shift_lo, shift_hi = _window_partners(np.arange(df), np.full(df, df), block)
        met = Counter((min(r, q), max(r, q)) for r in range(df)
                      for q in [*range(first_lo[r], first_hi[r]), *range(shift_lo[r], shift_hi[r])] if q != r)
        assert set(met) == window_pairs_by_definition(df, block)
        assert set(met.values()) <= {2}


def random_catalog(rng, products: int, terms: int):
    ids = rng.permutation(10 * products)[:products]
    lengths = rng.integers(1, 8, products)
    chosen = np.concatenate([rng.choice(terms, n, replace=False) for n in lengths])
    return sparse_catalog(ids, lengths, chosen, rng.random(len(chosen)))


@pytest.mark.parametrize("budget", [1, 300, 1 << 20])
def test_similar_lists_with_one_window_are_the_brute_force_top_n(budget):
    """One window per posting list: every pair that shares a term is a candidate, so the lists are
    the brute-force top n (ties to the smaller id), whatever the block of pair rows."""
    rng = np.random.default_rng(3)
    catalog = random_catalog(rng, products=150, terms=30)
    n = len(catalog.product_ids)
    dense = np.zeros((n, 30))
    dense[np.repeat(np.arange(n), np.diff(catalog.offsets)), catalog.terms] = catalog.weights
    sims = dense @ dense.T
    subjects, lengths, ids, scores = numpy_similar_lists(catalog, block=n, top_n=4, rescored=n, budget=budget)
    starts = np.r_[0, np.cumsum(lengths)]
    assert len(subjects) == n
    for subject, lo, hi in zip(subjects, starts[:-1], starts[1:]):
        row = int(np.flatnonzero(catalog.product_ids == subject)[0])
        expected = sorted((-sims[row, j], catalog.product_ids[j]) for j in range(n) if j != row and sims[row, j] > 0)[:4]
        assert ids[lo:hi].tolist() == [int(p) for _, p in expected]
        assert scores[lo:hi] == pytest.approx([-s for s, _ in expected], rel=1e-12)


def test_similar_lists_of_an_empty_catalog_are_empty():
    catalog = sparse_catalog(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    assert [len(a) for a in numpy_similar_lists(catalog, block=4, top_n=2, rescored=8)] == [0, 0, 0, 0]


def test_similar_products_equal_the_spark_formulation(spark):
    """On a generated 200-product catalog with windows of 8 (most posting lists are cut, twice):
    the same lists as the Spark joins, ids and float scores, and the same schema."""
    from bench.content_similar.spark_formulation import spark_similar_products
    from jobs.generate_data import build_world, products_table

    table = products_table(build_world(users=10, products=200, seed=11).catalog)
    rows = [(r["product_id"], r["category"], r["price"], r["active"], dict(r["other_features"]))
            for r in table.to_pylist()]
    params = ContentParams(similar_top_n=5, block_size=8, event_weights=WEIGHTS)
    vectors = tfidf_vectors(product_documents(products_frame(spark, rows)), params).cache()
    try:
        mine, theirs = similar_products(vectors, params), spark_similar_products(vectors, params)
        assert mine.schema == theirs.schema
        expected = by_subject(theirs)
        assert len(expected) > 150
        assert by_subject(mine) == expected
    finally:
        vectors.unpersist()


# --- params ------------------------------------------------------------------------

def test_params_from_conf_are_valid():
    """The [content] section of conf/jobs.toml builds valid params."""
    params = params_from_settings(load_conf("jobs")["content"])
    assert params.num_features == 1 << 18 and params.event_weights["purchase"] > params.event_weights["view"]


@pytest.mark.parametrize("bad", [{"num_features": 0}, {"top_n": 0}, {"similar_top_n": 0}, {"block_size": 1},
                                 {"half_life_days": 0.0}, {"half_life_days": float("nan")},
                                 {"event_weights": {"veiw": 1.0}}, {"event_weights": {"view": -1.0}},
                                 {"event_weights": {"view": float("inf")}}])
def test_params_reject_bad_values(bad):
    """Non-positive sizes, a bad half-life, unknown event types and bad weights raise ValueError."""
    with pytest.raises(ValueError):
        ContentParams(**bad)
