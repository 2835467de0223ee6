"""Loaders turn real public formats into landing rows: mapped types, ISO-Z times, catalogs."""
from __future__ import annotations

import json
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
