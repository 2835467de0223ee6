"""The Spark snapshot builder: candidate tables in, a verified LMDB snapshot out."""
from __future__ import annotations

from datetime import datetime, timezone

import lmdb
import pytest

from jobs.build_snapshot import build_snapshot
from jobs.candidates import replace_algorithm_candidates
from jobs.delta_files import UnsupportedDeltaTable, partition_values
from jobs.delta_tables import ensure_table
from jobs.paths import DataPaths
from schemas import CANDIDATES, PRODUCTS_STORED, spark_schema
from schemas.snapshot import (
    DATA_FILE, POLICY_FILE, PRODUCTS_DB, SCORE_RELATIVE_ERROR, USERS_DB, UserRecord, product_key, read_current_version, recs_db_name, unpack_product,
    unpack_ranked_list, unpack_user, user_key, verify_snapshot_dir,
)
from schemas.tables import USER_SEGMENTS
from tests.snapshot_records import snapshot_records

pytestmark = pytest.mark.spark

AS_OF = datetime(2026, 10, 5, tzinfo=timezone.utc)
SETTINGS = {"keep_versions": 2, "map_size_gb": 0.0625}


def candidate_rows(algorithm="popular", scores_for_user_7=(0.9, 0.5)):
    return [
        ("user", "7", algorithm, [3, 1], list(scores_for_user_7), f"{algorithm}-v1"),
        ("user", "8", algorithm, [2], [0.4], f"{algorithm}-v1"),
        ("category", "a.b", algorithm, [1, 2], [2.0, 1.0], f"{algorithm}-v1"),
        ("global", "all", algorithm, [2, 1, 3], [5.0, 4.0, 1.0], f"{algorithm}-v1"),
    ]


@pytest.fixture()
def lake(spark, tmp_path):
    paths = DataPaths(tmp_path)
    products = spark.createDataFrame(
        [(1, "a.b", 2.5, True, {"brand": "x"}, None, AS_OF), (2, "a.b", None, False, None, None, AS_OF),
         (3, "bücher", 9.0, True, None, None, AS_OF)], spark_schema(PRODUCTS_STORED))
    ensure_table(spark, paths.table("products"), PRODUCTS_STORED)
    products.write.format("delta").mode("append").save(paths.table("products"))
    candidates = spark.createDataFrame(candidate_rows(), spark_schema(CANDIDATES))
    replace_algorithm_candidates(spark, paths.table("candidates"), "popular", candidates)
    return paths


def open_db(path, name):
    env = lmdb.open(str(path), readonly=True, lock=False, max_dbs=64)
    return env, env.open_db(name.encode())


def test_builds_publishes_and_reads_back(spark, lake):
    """Every list and product lands in its named database, readable with the documented layout."""
    manifest = build_snapshot(spark, lake, AS_OF, SETTINGS, version="v1")
    root = lake.snapshots.local_path
    assert read_current_version(root) == "v1"
    assert verify_snapshot_dir(root / "v1") == manifest
    assert manifest.databases == {"products": 3, "recs/category/popular": 1,
                                  "recs/global/popular": 1, "recs/user/popular": 2}
    assert manifest.model_versions == {"popular": "popular-v1"}
    assert set(manifest.delta_versions) == {"candidates", "products"}

    env, users = open_db(root / "v1", recs_db_name("user", "popular"))
    products = env.open_db(PRODUCTS_DB.encode())
    with env.begin(buffers=True) as txn:
        ids, scores = unpack_ranked_list(txn.get(user_key(7), db=users))
        assert ids == (3, 1) and scores == pytest.approx((0.9, 0.5), rel=SCORE_RELATIVE_ERROR)
        assert txn.get(user_key(99), db=users) is None
        record = unpack_product(2, txn.get(product_key(2), db=products))
        assert (record.category, record.price, record.active) == ("a.b", None, False)
        assert unpack_product(3, txn.get(product_key(3), db=products)).category == "bücher"
    env.close()


def test_the_evaluations_policy_travels_in_the_snapshot(spark, lake):
    """A data dir with a verdict: the snapshot carries a checksummed copy, so hosts that pull get it."""
    policy = b'{"preference": ["popular"], "priors": {"all": {"popular": 0.3}}}'
    lake.policy.write_bytes(policy)
    manifest = build_snapshot(spark, lake, AS_OF, SETTINGS, version="v1")
    folder = lake.snapshots.local_path / "v1"
    assert set(manifest.files) == {DATA_FILE, POLICY_FILE} and (folder / POLICY_FILE).read_bytes() == policy
    assert verify_snapshot_dir(folder) == manifest


def test_user_segments_and_segment_lists_are_packed(spark, lake):
    """With a user_segments table, every user gets a record; segment lists get their database."""
    segments = spark.createDataFrame([(7, "heavy", "country=DE"), (9, "new", None)], spark_schema(USER_SEGMENTS))
    ensure_table(spark, lake.table("user_segments"), USER_SEGMENTS)
    segments.write.format("delta").mode("overwrite").save(lake.table("user_segments"))
    with_segment = candidate_rows() + [("segment", "country=DE", "popular", [3, 1], [2.0, 1.0], "popular-v1")]
    replace_algorithm_candidates(spark, lake.table("candidates"), "popular",
                                 spark.createDataFrame(with_segment, spark_schema(CANDIDATES)))
    manifest = build_snapshot(spark, lake, AS_OF, SETTINGS, version="v1")
    assert manifest.databases[USERS_DB] == 2 and manifest.databases["recs/segment/popular"] == 1
    assert "user_segments" in manifest.delta_versions
    env, users = open_db(lake.snapshots.local_path / "v1", USERS_DB)
    segment_lists = env.open_db(recs_db_name("segment", "popular").encode())
    with env.begin(buffers=True) as txn:
        assert unpack_user(7, txn.get(user_key(7), db=users)) == UserRecord(7, "heavy", "country=DE")
        assert unpack_user(9, txn.get(user_key(9), db=users)) == UserRecord(9, "new", None)
        assert unpack_ranked_list(txn.get(b"country=DE", db=segment_lists))[0] == (3, 1)
    env.close()


def test_failed_build_leaves_the_served_snapshot(spark, lake):
    """A build that fails half-way publishes nothing and leaves no visible folder."""
    build_snapshot(spark, lake, AS_OF, SETTINGS, version="v1")
    broken = spark.createDataFrame(candidate_rows(scores_for_user_7=(0.9,)), spark_schema(CANDIDATES))
    replace_algorithm_candidates(spark, lake.table("candidates"), "popular", broken)
    with pytest.raises(Exception, match="2 product ids but 1 scores"):
        build_snapshot(spark, lake, AS_OF, SETTINGS, version="v2")
    assert read_current_version(lake.snapshots.local_path) == "v1"
    assert sorted(p.name for p in lake.snapshots.local_path.iterdir()) == ["CURRENT", "v1"]


def test_keeps_only_the_newest_versions(spark, lake):
    """Publishing prunes to keep_versions, never removing the one in service."""
    for version in ("v1", "v2", "v3"):
        build_snapshot(spark, lake, AS_OF, SETTINGS, version=version)
    assert sorted(p.name for p in lake.snapshots.local_path.iterdir() if p.is_dir()) == ["v2", "v3"]
    assert read_current_version(lake.snapshots.local_path) == "v3"


def test_equal_tables_give_an_equal_snapshot_whatever_the_read_budget(spark, lake):
    """With a budget far below the data, the lists come in several key ranges, one pass
    over the files each: the snapshot holds the same records as with one read."""
    many = [("user", str(u), "popular", [u % 3 + 1, 2], [1.0, 0.5], "popular-v1") for u in range(10, 3000, 7)]
    replace_algorithm_candidates(spark, lake.table("candidates"), "popular",
                                 spark.createDataFrame(candidate_rows() + many, spark_schema(CANDIDATES)))
    build_snapshot(spark, lake, AS_OF, SETTINGS, version="v1")
    build_snapshot(spark, lake, AS_OF, {**SETTINGS, "read_budget_mb": 0.001}, version="v2")
    one_read, in_ranges = (snapshot_records(lake.snapshots.local_path / v) for v in ("v1", "v2"))
    assert len(one_read["recs/user/popular"]) == 2 + len(many)
    assert in_ranges == one_read


def test_a_table_with_deletion_vectors_is_refused(spark, lake):
    """Reading its Parquet files directly would bring deleted rows back: a clear error instead."""
    spark.sql(f"ALTER TABLE delta.`{lake.table('products')}` "
              "SET TBLPROPERTIES ('delta.enableDeletionVectors' = 'true')")
    with pytest.raises(UnsupportedDeltaTable, match="deletionVectors"):
        build_snapshot(spark, lake, AS_OF, SETTINGS, version="v1")
    assert not lake.snapshots.local_path.exists() or read_current_version(lake.snapshots.local_path) is None


@pytest.mark.parametrize("uri, values", [
    ("file:/lake/candidates/algorithm=als/subject_kind=user/part-0.parquet", (("algorithm", "als"),
                                                                              ("subject_kind", "user"))),
    ("s3a://b/t/algorithm=a%2520b/subject_kind=user/part-0.parquet", (("algorithm", "a b"), ("subject_kind", "user"))),
])
def test_partition_values_come_from_hive_style_folders(uri, values):
    assert partition_values(uri, ["algorithm", "subject_kind"]) == values


def test_a_file_outside_partition_folders_is_refused():
    with pytest.raises(UnsupportedDeltaTable):
        partition_values("file:/lake/candidates/part-0.parquet", ["algorithm"])
