"""Ingest end to end on a real landing folder: quarantine accounting, exactly-once, merges."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from jobs.delta_tables import table_version
from jobs.ingest import AccountingError, IngestCounts, duplicate_reasons, mark_duplicate_events, run_ingest
from jobs.paths import DataPaths

pytestmark = pytest.mark.spark

AS_OF = datetime(2026, 10, 5, tzinfo=timezone.utc)
SETTINGS = {"max_files_per_trigger": 100, "max_line_bytes": 2048}


def write_lines(path: Path, lines: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))


def event(user, product, kind="view", ts="2026-10-03T12:00:00Z"):
    return {"user_id": user, "event_type": kind, "product_id": product, "timestamp": ts}


@pytest.fixture(scope="module")
def lake(tmp_path_factory, spark):
    """A landing zone with good and bad rows in all three formats, ingested once."""
    root = tmp_path_factory.mktemp("lake")
    paths = DataPaths(root)
    events = paths.landing_for("events").local_path
    write_lines(events / "a.jsonl", [
        event(1, 10), event(1, 10),                      # the second is a duplicate
        event(2, 11, "purchase", 1790000000),            # epoch seconds
        event(-1, 10), "not json", "x" * 3000,           # bad id, bad JSON, oversized line
        event(3, 10, "teleport"), event(3, 10, ts="2099-01-01T00:00:00Z"),
        {"user_id": 4, "event_type": "view"},            # missing product_id
    ])
    (events / "b.csv").write_text("user_id,event_type,product_id,timestamp\n"
                                  "4,add_to_cart,12,2026-10-04T00:00:00Z\n5,view,abc,2026-10-04T00:00:00Z\n6,view\n")
    pq.write_table(pa.table({"user_id": [7, 8], "event_type": ["view", "view"], "product_id": [13, 2**33],
                             "timestamp": ["2026-10-02T00:00:00Z"] * 2}), events / "c.parquet")
    (events / ".hidden.jsonl").write_text(json.dumps(event(9, 9)) + "\n")  # a file still being written
    write_lines(paths.landing_for("products").local_path / "p.jsonl", [
        {"product_id": 10, "category": "a.b", "price": 3.5, "other_features": {"brand": "x"}},
        {"product_id": 11, "category": "a.c", "price": -1},
        {"product_id": 12, "category": "", "price": 1},
        {"product_id": 13, "category": "a.c", "price": 2.0},
        {"product_id": 10, "category": "a.b", "price": 4.5, "active": False},  # later row wins
    ])
    write_lines(paths.landing_for("profiles").local_path / "u.jsonl", [
        {"user_id": 1, "purchase_history": [10, 11], "view_history": [12], "other_features": {"country": "de"}},
        {"user_id": 2, "purchase_history": [-5]},
    ])
    counts = run_ingest(spark, paths, AS_OF, SETTINGS)
    return paths, counts


def read(spark, paths, table):
    return spark.read.format("delta").load(paths.table(table))


def test_counts_add_up_per_table(lake):
    """Every received row is either accepted or rejected, for every table."""
    _, counts = lake
    assert counts["events"] == IngestCounts(received=14, accepted=4, rejected=10)
    assert counts["products"] == IngestCounts(received=5, accepted=3, rejected=2)
    assert counts["profiles"] == IngestCounts(received=2, accepted=1, rejected=1)


def test_rejected_rows_keep_raw_and_reason(spark, lake):
    """Each bad event is quarantined with its raw text and the rule it broke."""
    paths, _ = lake
    rows = read(spark, paths, "events_rejected").collect()
    reasons = sorted(r.reason for r in rows)
    assert reasons == sorted([
        "duplicate event (repeated in this batch)", "user_id: below minimum 0",
        "malformed JSON: not one object per line", "line longer than 2048 bytes",
        "event_type: unknown value", "timestamp: in the future", "product_id: missing",
        "product_id: not an integer", "malformed CSV row: wrong number of fields",
        "product_id: above maximum 4294967295",
    ])
    bad_json = next(r for r in rows if r.reason.startswith("malformed JSON"))
    assert bad_json.raw == "not json" and bad_json.source_file.endswith("a.jsonl")
    assert all(r.rejected_at.replace(tzinfo=timezone.utc) == AS_OF for r in rows)


def test_accepted_events_are_typed_and_partitioned(spark, lake):
    """Accepted events carry UTC timestamps and their event_date partition."""
    paths, _ = lake
    rows = {(r.user_id, r.product_id): r for r in read(spark, paths, "events").collect()}
    assert set(rows) == {(1, 10), (2, 11), (4, 12), (7, 13)}  # not the hidden file's (9, 9)
    assert rows[(2, 11)].event_date == "2026-09-21"  # 1790000000 s
    assert rows[(4, 12)].event_type == "add_to_cart"


def test_rerun_adds_nothing(spark, lake):
    """Ingesting the same landing files again changes no table."""
    paths, _ = lake
    before = {t: table_version(spark, paths.table(t)) for t in ("events", "events_rejected", "products")}
    counts = run_ingest(spark, paths, AS_OF, SETTINGS)
    assert all(c == IngestCounts() for c in counts.values())
    assert {t: table_version(spark, paths.table(t)) for t in before} == before


def transactions_of_data_commits(table_path: str) -> list[list[dict]]:
    """Per commit of ``table_path`` that adds files, its ``txn`` actions (from _delta_log)."""
    commits = []
    for commit in sorted(Path(table_path, "_delta_log").glob("*.json")):
        actions = [json.loads(line) for line in commit.read_text().splitlines()]
        if any("add" in action for action in actions):
            commits.append([action["txn"] for action in actions if "txn" in action])
    return commits


def test_every_write_of_a_batch_carries_its_transaction_id(lake):
    """The events append, the quarantine append and the catalog MERGE each record
    (stream id, batch id): what lets Delta skip a batch replayed after a crash. The
    micro-batch runs in a clone of the session, so the id must be set on that one."""
    paths, _ = lake
    for table, streams in [("events", "ingest-events-"), ("events_rejected", "ingest-events-"),
                           ("products", "ingest-products-")]:
        commits = transactions_of_data_commits(paths.table(table))
        assert commits and all(any(t["appId"].startswith(streams) for t in txns) for txns in commits), \
            (table, commits)


def test_new_file_with_a_known_event_is_quarantined_as_duplicate(spark, lake, tmp_path):
    """An event seen in an earlier run is refused as a duplicate; a new one is appended."""
    paths, _ = lake
    write_lines(paths.landing_for("events").local_path / "d.jsonl", [event(1, 10), event(1, 13, "purchase")])
    counts = run_ingest(spark, paths, AS_OF, SETTINGS, tables=["events"])
    assert counts["events"] == IngestCounts(received=2, accepted=1, rejected=1)
    assert read(spark, paths, "events_rejected").where(
        F.col("reason") == "duplicate event (already ingested)").count() == 1
    logged = read(spark, paths, "ingest_log").where(F.col("stream_id") == "ingest-events-json")
    assert logged.agg(F.sum("received"), F.sum("accepted"), F.sum("rejected")).first() == (11, 3, 8)


def test_products_merge_last_row_wins_and_inactive_kept(spark, lake):
    """The catalog holds one row per product, the latest received, inactive flag included."""
    paths, _ = lake
    rows = {r.product_id: r for r in read(spark, paths, "products").collect()}
    assert set(rows) == {10, 13}
    assert rows[10].price == 4.5 and rows[10].active is False
    assert rows[13].active is True


def test_catalog_update_replaces_a_product(spark, lake):
    """A later catalog file re-activates a product and changes its price, in place."""
    paths, _ = lake
    write_lines(paths.landing_for("products").local_path / "p2.jsonl",
                [{"product_id": 10, "category": "a.b", "price": 5.0, "active": True}])
    run_ingest(spark, paths, AS_OF, SETTINGS, tables=["products"])
    rows = read(spark, paths, "products").where("product_id = 10").collect()
    assert len(rows) == 1 and rows[0].price == 5.0 and rows[0].active is True


def test_deactivation_without_category_flips_only_the_flag(spark, lake):
    """{product_id, active: false} keeps the stored category and price; of an unknown
    product it is accepted and stores nothing."""
    paths, _ = lake
    write_lines(paths.landing_for("products").local_path / "p3.jsonl",
                [{"product_id": 13, "active": False}, {"product_id": 99, "active": False}])
    counts = run_ingest(spark, paths, AS_OF, SETTINGS, tables=["products"])
    assert counts["products"] == IngestCounts(received=2, accepted=2, rejected=0)
    rows = {r.product_id: r for r in read(spark, paths, "products").collect()}
    assert rows[13].active is False and rows[13].category == "a.c" and rows[13].price == 2.0
    assert 99 not in rows


def test_the_latest_change_wins_whatever_order_files_arrive_in(spark, lake):
    """Two collector workers' files: the one that sorts last holds the older change.
    Within a run the newer changed_at wins; a later run with a stale change is ignored;
    a row without changed_at (a batch catalog file) still applies."""
    paths, _ = lake
    landing = paths.landing_for("products").local_path
    write_lines(landing / "collector-a-200-1.jsonl",
                [{"product_id": 14, "category": "x", "price": 1.0, "changed_at": "2026-10-01T10:00:00Z"}])
    write_lines(landing / "collector-a-100-1.jsonl",
                [{"product_id": 14, "category": "x", "price": 2.0, "changed_at": "2026-10-01T11:00:00Z"}])
    run_ingest(spark, paths, AS_OF, SETTINGS, tables=["products"])
    row = read(spark, paths, "products").where("product_id = 14").first()
    assert row.price == 2.0 and row.changed_at is not None

    write_lines(landing / "collector-a-300-1.jsonl",
                [{"product_id": 14, "category": "x", "price": 3.0, "changed_at": "2026-10-01T10:30:00Z"},
                 {"product_id": 14, "active": False, "changed_at": "2026-10-01T09:00:00Z"}])
    run_ingest(spark, paths, AS_OF, SETTINGS, tables=["products"])
    row = read(spark, paths, "products").where("product_id = 14").first()
    assert (row.price, row.active) == (2.0, True)  # both older than the stored change

    write_lines(landing / "zz-catalog.jsonl", [{"product_id": 14, "category": "x", "price": 4.0}])
    run_ingest(spark, paths, AS_OF, SETTINGS, tables=["products"])
    assert read(spark, paths, "products").where("product_id = 14").first().price == 4.0


def test_profiles_become_interactions(spark, lake):
    """Profile histories become purchase and view rows stamped with the run's as-of."""
    paths, _ = lake
    rows = sorted((r.user_id, r.product_id, r.event_type) for r in read(spark, paths, "profile_interactions").collect())
    assert rows == [(1, 10, "purchase"), (1, 11, "purchase"), (1, 12, "view")]


def test_counts_refuse_to_lose_a_row():
    """The accounting check raises when received != accepted + rejected."""
    with pytest.raises(AccountingError):
        IngestCounts().add(received=3, accepted=1, rejected=1)


@pytest.mark.parametrize("broadcast", [True, False])
def test_duplicates_are_marked_alike_joined_by_broadcast_or_by_shuffle(spark, broadcast):
    """The first of a key by (file, arrival) is new, the later ones repeats; a key the
    table has (same date) is already ingested; other rows keep a null reason."""
    stamp = datetime(2026, 10, 3, 12, tzinfo=timezone.utc)
    rows = [  # user, type, product, file, arrival order
        (1, "view", 10, "b.jsonl", 0), (1, "view", 10, "a.jsonl", 5), (1, "view", 10, "a.jsonl", 7),
        (2, "view", 10, "a.jsonl", 1), (3, "purchase", 11, "a.jsonl", 2), (3, "view", 11, "a.jsonl", 3),
    ]
    events = spark.createDataFrame(
        [(u, t, p, stamp, "2026-10-03", "batch-2", f, o, f"raw {o} {f}") for u, t, p, f, o in rows],
        "user_id long, event_type string, product_id long, timestamp timestamp, event_date string, "
        "ingest_batch string, _source_file string, _order long, _raw string")
    stored = spark.createDataFrame([(3, "purchase", 11, stamp, "2026-10-03", "batch-1")],
                                   "user_id long, event_type string, product_id long, timestamp timestamp, "
                                   "event_date string, ingest_batch string")
    marked = mark_duplicate_events(events, duplicate_reasons(events, stored), broadcast=broadcast)
    reasons = {(r["_source_file"], r["_order"]): r["_reason"] for r in marked.collect()}
    repeated, known = "duplicate event (repeated in this batch)", "duplicate event (already ingested)"
    assert reasons == {("a.jsonl", 5): None, ("a.jsonl", 7): repeated, ("b.jsonl", 0): repeated,
                       ("a.jsonl", 1): None, ("a.jsonl", 2): known, ("a.jsonl", 3): None}
    assert marked.count() == len(rows) and set(marked.columns) == set(events.columns) | {"_reason"}
