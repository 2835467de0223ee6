"""Loaders turn real public formats into landing rows: mapped types, ISO-Z times, catalogs."""
from __future__ import annotations

import json
import zlib
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobs import content
from jobs.loaders import epoch_seconds_to_iso, movielens, online_retail, rees46, taobao
from schemas import EVENTS, PRODUCTS, validate_record

pytestmark = pytest.mark.spark

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TAOBAO = SHARED_DATA / "taobao-userbehavior-sample" / "UserBehavior.csv"
REES46 = SHARED_DATA / "rees46-oct2019-sample" / "2019-Oct-sample.csv"
ONLINE_RETAIL = SHARED_DATA / "online-retail" / "OnlineRetail.csv"
ISO_Z = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$"


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _type_counts(events) -> dict[str, int]:
    return {r["event_type"]: r["count"] for r in events.groupBy("event_type").count().collect()}


@contextmanager
def _session_time_zone(spark, zone: str):
    old = spark.conf.get("spark.sql.session.timeZone")
    spark.conf.set("spark.sql.session.timeZone", zone)
    try:
        yield
    finally:
        spark.conf.set("spark.sql.session.timeZone", old)


# --- shared ------------------------------------------------------------------

def test_epoch_to_iso_ignores_session_time_zone(spark):
    """Epoch seconds format as UTC whatever the session zone; junk and out-of-range give null."""
    values = ["0", "-1", "1511544070", "1700000000", " 86399 ", "abc", None, "99999999999999"]
    df = spark.createDataFrame([(v,) for v in values], "t STRING")
    with _session_time_zone(spark, "America/New_York"):
        got = [r[0] for r in df.select(epoch_seconds_to_iso(df.t)).collect()]
    expected = [_iso(int(v)) for v in values[:5]] + [None, None, None]
    assert got == expected


# --- Taobao ------------------------------------------------------------------

@pytest.fixture(scope="module")
def taobao_raw(spark):
    if not TAOBAO.is_file():
        pytest.skip(f"{TAOBAO} not present")
    return taobao.read_raw(spark, TAOBAO).cache()


@pytest.fixture(scope="module")
def taobao_events(taobao_raw):
    return taobao.to_events(taobao_raw).cache()


def test_taobao_event_counts_match_the_readme(taobao_events):
    """pv/cart/fav/buy map to view/add_to_cart/wishlist/purchase with the documented counts."""
    assert taobao_events.columns == EVENTS.names
    assert _type_counts(taobao_events) == {"view": 75_693, "add_to_cart": 4_494, "wishlist": 2_351,
                                           "purchase": 1_749}
    assert taobao_events.count() == 84_287
    assert taobao_events.select("user_id").distinct().count() == 814


def test_taobao_timestamps_are_iso_utc(taobao_events):
    """Unix seconds become ISO-8601 UTC strings ending in Z; none is lost."""
    first = taobao_events.first()
    assert first.asDict() == {"user_id": 1, "event_type": "view", "product_id": 2268318,
                              "timestamp": _iso(1511544070)}
    assert taobao_events.where(~taobao_events.timestamp.rlike(ISO_Z)
                               | taobao_events.timestamp.isNull()).count() == 0


def test_taobao_catalog_is_distinct_items(taobao_raw):
    """One product per item, category = category id, no price."""
    products = taobao.to_products(taobao_raw)
    assert products.columns == PRODUCTS.names
    assert products.count() == 55_233
    row = products.where("product_id = 2268318").first()
    assert (row.category, row.price, row.active) == ("2520377", None, None)


def test_taobao_unknown_behaviour_and_junk_pass_through(spark):
    """Unknown behaviours and unparsable fields still land, for ingest to quarantine."""
    raw = spark.createDataFrame([("1", "10", "5", "pv", "1511544070"), ("2", "x", "5", "like", "soon")],
                                taobao.RAW_SCHEMA)
    rows = [r.asDict() for r in taobao.to_events(raw).collect()]
    assert rows == [
        {"user_id": 1, "event_type": "view", "product_id": 10, "timestamp": _iso(1511544070)},
        {"user_id": 2, "event_type": "like", "product_id": None, "timestamp": None},
    ]


def test_taobao_main_lands_files_atomically(spark, tmp_path: Path):
    """main() writes named jsonl files into events/ and products/ and leaves no hidden folder."""
    if not TAOBAO.is_file():
        pytest.skip(f"{TAOBAO} not present")
    assert taobao.main(["--input", str(TAOBAO), "--out", str(tmp_path)]) == 0
    events = sorted((tmp_path / "events").iterdir())
    products = sorted((tmp_path / "products").iterdir())
    assert events and all(p.name.startswith("taobao-events-") and p.suffix == ".jsonl" for p in events)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events", "products"]
    lines = [line for p in events for line in p.read_text().splitlines()]
    assert len(lines) == 84_287
    assert sum(len(p.read_text().splitlines()) for p in products) == 55_233
    as_of = datetime(2017, 12, 4, tzinfo=timezone.utc)
    rejected = [line for line in lines[:5_000] if validate_record(EVENTS, json.loads(line), as_of)[1]]
    assert rejected == []


# --- REES46 ------------------------------------------------------------------

@pytest.fixture(scope="module")
def rees46_raw(spark):
    if not REES46.is_file():
        pytest.skip(f"{REES46} not present")
    return rees46.read_raw(spark, REES46).cache()


def test_rees46_events(rees46_raw):
    """1,000 events: view 987, cart -> add_to_cart 3, purchase 10; times become ISO-Z."""
    events = rees46.to_events(rees46_raw)
    assert events.columns == EVENTS.names
    assert _type_counts(events) == {"view": 987, "add_to_cart": 3, "purchase": 10}
    first = events.first().asDict()
    assert first == {"user_id": 541312140, "event_type": "view", "product_id": 44600062,
                     "timestamp": "2019-10-01T00:00:00Z"}
    assert events.where(~events.timestamp.rlike(ISO_Z)).count() == 0


def test_rees46_catalog(rees46_raw):
    """534 products; category_code when present, else category_id; brand and price kept."""
    products = {r.product_id: r for r in rees46.to_products(rees46_raw).collect()}
    assert len(products) == 534
    water_heater = products[3900821]
    assert water_heater.category == "appliances.environment.water_heater"
    assert water_heater.price == pytest.approx(33.20)
    assert water_heater.other_features == {"brand": "aqua", "category_id": "2053013552326770905"}
    no_code = products[44600062]
    assert no_code.category == "2103807459595387724"
    sofa = products[17200506]  # no brand in the data
    assert sofa.other_features == {"category_id": "2053013559792632471"}


def test_rees46_latest_row_wins(spark):
    """A product's catalog row comes from its latest event; unknown event types pass through."""
    raw = spark.createDataFrame([
        ("2019-10-02 10:00:00 UTC", "view", "7", "11", "", "old", "5.00", "1", "s"),
        ("2019-10-03 10:00:00 UTC", "cart", "7", "12", "kids.toys", "new", "4.50", "1", "s"),
        ("2019-10-01 10:00:00 UTC", "refund", "7", "13", "", "older", "6.00", "1", "s"),
    ], rees46.RAW_SCHEMA)
    (row,) = rees46.to_products(raw).collect()
    assert (row.product_id, row.category, row.price) == (7, "kids.toys", 4.5)
    assert row.other_features == {"brand": "new", "category_id": "12"}
    types = [r.event_type for r in rees46.to_events(raw).collect()]
    assert types == ["view", "add_to_cart", "refund"]


# --- MovieLens ---------------------------------------------------------------

def _u_item_line(movie_id: int, title: str, genres: set[str]) -> str:
    flags = "|".join("1" if g in genres else "0" for g in movielens.GENRES_100K)
    return f"{movie_id}|{title}|01-Jan-1995||http://example.org/{movie_id}|{flags}"


@pytest.fixture(scope="module")
def ml_files(tmp_path_factory):
    """Small files in the exact MovieLens 100k and 1M layouts."""
    root = tmp_path_factory.mktemp("movielens")
    k100, m1 = root / "ml-100k", root / "ml-1m"
    k100.mkdir()
    m1.mkdir()
    ratings = [(196, 242, 3, 881250949), (186, 302, 4, 891717742), (22, 377, 1, 878887116),
               (244, 51, 5, 880606923)]
    (k100 / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ratings))
    (k100 / "u.item").write_bytes("\n".join([
        _u_item_line(242, "Kolya (1996)", {"Comedy"}),
        _u_item_line(302, "L.A. Confidential (1997)", {"Crime", "Film-Noir", "Mystery", "Thriller"}),
        _u_item_line(377, "Heavyweights (1994)", {"Children's", "Comedy"}),
        _u_item_line(51, "Légende (1995)", set()),
    ]).encode("latin-1") + b"\n")
    (m1 / "ratings.dat").write_text("".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in ratings))
    (m1 / "movies.dat").write_bytes("\n".join([
        "242::Kolya (1996)::Comedy", "302::L.A. Confidential (1997)::Crime|Film-Noir|Mystery|Thriller",
        "377::Heavyweights (1994)::Children's|Comedy", "51::Misérables, Les (1995)::Drama|Musical",
    ]).encode("latin-1") + b"\n")
    return {"100k": k100, "1m": m1, "ratings": ratings}


@pytest.mark.parametrize("flavor", movielens.FLAVORS)
def test_movielens_ratings_become_implicit_events(spark, ml_files, flavor: str):
    """Rating >= 4 is a purchase, lower a view; the separator follows the file name."""
    path = ml_files[flavor] / movielens.RATINGS_FILE[flavor]
    assert movielens.flavor_of(path) == flavor
    events = [r.asDict() for r in movielens.to_events(movielens.read_ratings(spark, path, flavor)).collect()]
    assert events == [
        {"user_id": u, "event_type": "purchase" if r >= 4 else "view", "product_id": i, "timestamp": _iso(t)}
        for u, i, r, t in ml_files["ratings"]
    ]


def test_movielens_u_item_catalog(spark, ml_files):
    """u.item: first flagged genre, lower-cased, is the category; Latin-1 titles survive."""
    raw = movielens.read_items(spark, ml_files["100k"] / "u.item", "100k")
    products = {r.product_id: r for r in movielens.to_products(movielens.movies_from_u_item(raw)).collect()}
    assert {pid: p.category for pid, p in products.items()} == {
        242: "comedy", 302: "crime", 377: "children's", 51: "unknown"}
    assert products[302].other_features == {"title": "L.A. Confidential (1997)",
                                            "genres": "Crime|Film-Noir|Mystery|Thriller"}
    assert products[51].other_features["title"] == "Légende (1995)"
    assert products[242].price is None


def test_movielens_movies_dat_main_parquet(spark, ml_files, tmp_path: Path):
    """main() on a 1M folder finds ratings.dat and movies.dat and lands Parquet with our columns."""
    assert movielens.main(["--input", str(ml_files["1m"]), "--out", str(tmp_path), "--format", "parquet"]) == 0
    events = pq.read_table(tmp_path / "events").to_pylist()
    products = {r["product_id"]: r for r in pq.read_table(tmp_path / "products").to_pylist()}
    assert sorted((e["product_id"], e["event_type"]) for e in events) == [
        (51, "purchase"), (242, "view"), (302, "purchase"), (377, "view")]
    assert list(pq.read_table(tmp_path / "events").schema.names) == EVENTS.names
    assert products[377]["category"] == "children's"
    assert dict(products[51]["other_features"]) == {"title": "Misérables, Les (1995)",
                                                     "genres": "Drama|Musical"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events", "products"]


def test_loader_help_lists_options(capsys):
    """Every loader documents --input, --out and --format."""
    for module in (taobao, rees46, movielens, online_retail):
        with pytest.raises(SystemExit) as exc:
            module.main(["--help"])
        assert exc.value.code == 0
        text = capsys.readouterr().out
        assert all(opt in text for opt in ("--input", "--out", "--format"))


# --- Online Retail -----------------------------------------------------------

# One line per case; the comment says what the loader makes of it.
ONLINE_RETAIL_LINES = (
    "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country",
    "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom",  # sale
    "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom",  # copy
    "C536379,85123A,WHITE HANGING HEART T-LIGHT HOLDER,-1,2010-12-01 09:41:00,2.55,14527.0,United Kingdom",  # cancel
    "536366,22633,HAND WARMER UNION JACK,6,2010-12-01 08:28:00,1.85,,United Kingdom",  # no customer
    "536367,22633,damaged,-5,2010-12-02 10:00:00,0.0,,United Kingdom",  # stock adjustment
    '536381,82567,"AIRLINE LOUNGE,METAL SIGN",2,2011-06-01 09:41:00,2.1,15311.0,United Kingdom',  # BST: 08:41Z
    "536381,POST,POSTAGE,1,2011-06-01 09:41:00,18.0,15311.0,United Kingdom",  # not a product
    "536382,gift_0001_20,Dotcomgiftshop Gift Voucher £20.00,1,2011-06-02 10:00:00,17.02,,United Kingdom",  # voucher
    "536383,85123a,WHITE HANGING HEART T-LIGHT HOLDER,1,2011-01-10 10:00:00,3.0,13047.0,United Kingdom",  # = 85123A
    "536384,15056BL,EDWARDIAN PARASOL BLACK,3,2011-07-01 10:15:00,5.95,13047.0,United Kingdom",  # two letters
    '536385,22041,"RECORD FRAME 7"" SINGLE SIZE ",48,2011-06-01 12:27:00,2.1,16210.0,United Kingdom',  # quote
    "536386,DCGSSBOY,BOYS PARTY BAG,1,2011-03-01 10:00:00,3.29,12345.0,United Kingdom",  # hashed id
    "536387,22633,HAND WARMER UNION JACK,x,2011-02-01 10:00:00,1.85,13000.0,United Kingdom",  # bad quantity
    "536388,22633,HAND WARMER UNION JACK,2,01/02/2011 10:00,1.85,13000.0,United Kingdom",  # bad date
)


@pytest.fixture
def retail_csv(tmp_path: Path) -> Path:
    path = tmp_path / "OnlineRetail.csv"
    path.write_text("\n".join(ONLINE_RETAIL_LINES) + "\n", encoding="utf-8")
    return path


def _dcgs_id(code: bytes) -> int:
    return online_retail.HASHED_BASE + zlib.crc32(code) % online_retail.HASHED_SPAN


def test_online_retail_events(spark, retail_csv: Path):
    """Sales to known customers of products become purchases, once each, at UTC; the rest are left out."""
    raw = online_retail.read_raw(spark, retail_csv)
    with _session_time_zone(spark, "America/New_York"):
        events = online_retail.to_events(raw)
        rows = sorted((r.asDict() for r in events.collect()), key=lambda r: (r["user_id"], r["product_id"]))
    assert events.columns == EVENTS.names
    purchase = "purchase"
    assert rows == [
        {"user_id": 12345, "event_type": purchase, "product_id": _dcgs_id(b"DCGSSBOY"),
         "timestamp": "2011-03-01T10:00:00Z"},
        {"user_id": 13000, "event_type": None, "product_id": 226_330_000, "timestamp": "2011-02-01T10:00:00Z"},
        {"user_id": 13000, "event_type": purchase, "product_id": 226_330_000, "timestamp": None},
        {"user_id": 13047, "event_type": purchase, "product_id": 150_560_212, "timestamp": "2011-07-01T09:15:00Z"},
        {"user_id": 13047, "event_type": purchase, "product_id": 851_230_100, "timestamp": "2011-01-10T10:00:00Z"},
        {"user_id": 15311, "event_type": purchase, "product_id": 825_670_000, "timestamp": "2011-06-01T08:41:00Z"},
        {"user_id": 16210, "event_type": purchase, "product_id": 220_410_000, "timestamp": "2011-06-01T11:27:00Z"},
        {"user_id": 17850, "event_type": purchase, "product_id": 851_230_100, "timestamp": "2010-12-01T08:26:00Z"},
    ]


def test_online_retail_catalog(spark, retail_csv: Path):
    """One row per product code (case folded), category retail, modal price, description and sku;
    no row for postage or vouchers."""
    products = {r.product_id: r for r in online_retail.to_products(online_retail.read_raw(spark, retail_csv)).collect()}
    expected = {
        851_230_100: (2.55, "WHITE HANGING HEART T-LIGHT HOLDER", "85123A"),
        226_330_000: (1.85, "HAND WARMER UNION JACK", "22633"),  # not "damaged": that line has price 0
        825_670_000: (2.1, "AIRLINE LOUNGE,METAL SIGN", "82567"),
        150_560_212: (5.95, "EDWARDIAN PARASOL BLACK", "15056BL"),
        220_410_000: (2.1, 'RECORD FRAME 7" SINGLE SIZE', "22041"),
        _dcgs_id(b"DCGSSBOY"): (3.29, "BOYS PARTY BAG", "DCGSSBOY"),
    }
    assert {pid: (p.price, p.other_features["description"], p.other_features["sku"])
            for pid, p in products.items()} == expected
    assert {p.category for p in products.values()} == {online_retail.CATEGORY}
    assert all(p.active is None for p in products.values())


def test_online_retail_description_is_content(spark, retail_csv: Path):
    """jobs.content makes words of the description and leaves the sku out."""
    products = online_retail.to_products(online_retail.read_raw(spark, retail_csv))
    tokens = {r.product_id: set(r.tokens) for r in content.product_documents(products).collect()}
    assert {"word:airline", "word:lounge", "word:metal", "word:sign"} <= tokens[825_670_000]
    assert not any("82567" in t for t in tokens[825_670_000])


def test_online_retail_main_lands_what_ingest_accepts(spark, retail_csv: Path, tmp_path: Path):
    """main() lands jsonl; ingest's validator accepts the purchases and rejects the unreadable lines."""
    out = tmp_path / "landing"
    assert online_retail.main(["--input", str(retail_csv), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["events", "products"]
    events = [json.loads(line) for p in sorted((out / "events").iterdir()) for line in p.read_text().splitlines()]
    as_of = datetime(2011, 12, 10, tzinfo=timezone.utc)
    reasons = sorted(reason for _, reason in (validate_record(EVENTS, e, as_of) for e in events) if reason)
    assert len(events) == 8 and len(reasons) == 2
    assert reasons[0].startswith("event_type") and reasons[1].startswith("timestamp")
    products = [json.loads(line) for p in (out / "products").iterdir() for line in p.read_text().splitlines()]
    assert len(products) == 6
    assert all(validate_record(PRODUCTS, p, as_of)[1] is None for p in products)


@pytest.fixture(scope="module")
def online_retail_raw(spark):
    if not ONLINE_RETAIL.is_file():
        pytest.skip(f"{ONLINE_RETAIL} not present")
    return online_retail.read_raw(spark, ONLINE_RETAIL).cache()


def test_online_retail_real_events(online_retail_raw):
    """The README's 397,924 purchase lines by 4,339 customers of 3,665 codes, less 1,550 lines of
    POST, M, C2, DOT and BANK CHARGES (4 customers bought nothing else) and 10,092 lines that
    repeat a (customer, product, minute): 386,282 events by 4,335 customers of 3,660 products."""
    from pyspark.sql import functions as F

    events = online_retail.to_events(online_retail_raw)
    counts = events.agg(F.count("*").alias("n"), F.countDistinct("user_id").alias("users"),
                        F.countDistinct("product_id").alias("products"),
                        F.min("timestamp").alias("first"), F.max("timestamp").alias("last")).first()
    assert counts.asDict() == {"n": 386_282, "users": 4_335, "products": 3_660,
                               "first": "2010-12-01T08:26:00Z", "last": "2011-12-09T12:50:00Z"}
    assert _type_counts(events) == {"purchase": 386_282}
    assert events.where(~events.timestamp.rlike(ISO_Z) | events.user_id.isNull()
                        | events.product_id.isNull()).count() == 0


def test_online_retail_real_ids_are_distinct(online_retail_raw):
    """Every stock code of the file (case folded) has its own uint32 id; the catalog has one row each."""
    from pyspark.sql import functions as F

    codes = (online_retail_raw.select(online_retail.stock_code(F.col("StockCode")).alias("code"))
             .where(F.col("code").isNotNull()).distinct()
             .select("code", online_retail.product_id_of(F.col("code")).alias("id")))
    stats = codes.agg(F.count("*").alias("codes"), F.countDistinct("id").alias("ids"),
                      F.min("id").alias("low"), F.max("id").alias("high")).first()
    assert stats.codes == 3_958  # 4,070 codes less 112 lower-case twins (111 products and m, manual)
    assert stats.ids == stats.codes
    assert 0 <= stats.low and stats.high <= 2 ** 32 - 1
    products = online_retail.to_products(online_retail_raw)
    # Less the 15 upper-cased charge and voucher codes.
    assert products.count() == products.select("product_id").distinct().count() == 3_958 - 15
