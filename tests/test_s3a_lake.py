"""Spark and Delta Lake on a real S3 API through ``s3a://`` (moto's server on loopback).

Not covered: S3A's uploads through the SDK's async client (its transfer manager, e.g.
``FileSystem.copyFromLocalFile``). moto's server answers ``Expect: 100-continue`` twice
and that client takes the second as the final status ("Status Code: 100"). Spark's and
Delta's writes, and streaming checkpoints, go through the sync client and work.
"""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from jobs.spark_session import s3a_conf
from schemas.settings import PROJECT_ROOT
from schemas.storage import Location, S3Settings
from tests.jvm import SHORT_LIVED_JVM
from tests.objectstore_fixtures import CREDENTIALS

pytestmark = pytest.mark.spark

EVENT_SCHEMA = "user_id BIGINT, product_id BIGINT"


@pytest.fixture
def bucket(spark, object_store_env):
    """A new bucket the shared session reaches through s3a://, set up for this bucket alone.

    The session may have started before the store (on a random port) existed, so the
    settings go in as Hadoop's per-bucket keys: a bucket the JVM has not opened yet gets
    a FileSystem of its own, built from them."""
    name = object_store_env.new_bucket("lake")
    settings = {key.removeprefix("spark.hadoop."): value
                for key, value in s3a_conf(S3Settings.load(), name).items()}
    # The JVM's environment was fixed before these credentials existed: for the tests
    # only, keys in the configuration.
    prefix = f"fs.s3a.bucket.{name}."
    settings.update({prefix + "aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
                     prefix + "access.key": CREDENTIALS["AWS_ACCESS_KEY_ID"],
                     prefix + "secret.key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"]})
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    for key, value in settings.items():
        hadoop.set(key, value)
    yield name
    for key in settings:
        hadoop.unset(key)


def _ids(spark, path: str, **options) -> list[int]:
    reader = spark.read.format("delta")
    for key, value in options.items():
        reader = reader.option(key, value)
    return sorted(row.id for row in reader.load(path).collect())


def test_delta_table_on_s3a_keeps_both_versions(spark, bucket):
    """A write and an append to s3a://<bucket>/lake/t: both versions read back, the log is in the bucket."""
    path = f"s3a://{bucket}/lake/t"
    spark.range(0, 5).write.format("delta").save(path)
    spark.range(5, 8).write.format("delta").mode("append").save(path)
    assert _ids(spark, path, versionAsOf=0) == list(range(5))
    assert _ids(spark, path, versionAsOf=1) == list(range(8))
    assert _ids(spark, path) == list(range(8))
    log = Location.of(path) / "_delta_log"
    assert {"00000000000000000000.json", "00000000000000000001.json"} <= set(log.children())


def test_delta_commits_to_s3a_through_the_single_driver_log_store(spark):
    """docs/scaling.md's one-writer rule rests on this: Delta's default LogStore for s3a."""
    jvm_class = spark._jvm.org.apache.spark.sql.delta.storage.DelegatingLogStore
    assert jvm_class.getDefaultLogStoreClassName("s3a").get() == "io.delta.storage.S3SingleDriverLogStore"


def _land(folder: Location, name: str, events: list[tuple[int, int]]) -> None:
    lines = (json.dumps({"user_id": user, "product_id": product}) for user, product in events)
    (folder / name).write_text("\n".join(lines) + "\n")


def _stream_once(spark, landing: str, sink: str, checkpoint: str) -> None:
    query = (spark.readStream.schema(EVENT_SCHEMA).json(landing)
             .writeStream.format("delta").option("checkpointLocation", checkpoint)
             .trigger(availableNow=True).start(sink))
    query.awaitTermination(120)
    assert query.exception() is None and not query.isActive


def test_streaming_on_s3a_takes_each_landed_file_once(spark, bucket):
    """JSON lines landed in an s3a folder stream into an s3a Delta table with the checkpoint
    on s3a: a rerun with nothing new commits nothing, a new file is taken alone."""
    root = Location.of(f"s3a://{bucket}")
    landing, sink, checkpoint = root / "landing/events", root / "lake/events", root / "checkpoints/events"
    _land(landing, "part-0.json", [(1, 10), (1, 11), (2, 10)])
    _land(landing, "part-1.json", [(3, 12)])

    def rows():
        return sorted(tuple(row) for row in spark.read.format("delta").load(str(sink)).collect())

    def versions():
        return spark.sql(f"DESCRIBE HISTORY delta.`{sink}`").count()

    _stream_once(spark, str(landing), str(sink), str(checkpoint))
    assert rows() == [(1, 10), (1, 11), (2, 10), (3, 12)]
    assert "offsets" in checkpoint.children() and "commits" in checkpoint.children()

    _stream_once(spark, str(landing), str(sink), str(checkpoint))
    assert rows() == [(1, 10), (1, 11), (2, 10), (3, 12)] and versions() == 1

    _land(landing, "part-2.json", [(4, 13)])
    _stream_once(spark, str(landing), str(sink), str(checkpoint))
    assert rows() == [(1, 10), (1, 11), (2, 10), (3, 12), (4, 13)] and versions() == 2


def test_spark_submit_reaches_s3a_from_conf_and_environment(object_store, tmp_path):
    """`scripts/submit` as a job runs it: the s3a jars on --jars, the endpoint from
    conf/storage.toml (here through its environment overrides), keys from the standard
    AWS variables, and a --conf for an s3a key wins over the file."""
    bucket = object_store.new_bucket("submit")
    probe = tmp_path / "probe.py"
    probe.write_text("import sys\n"
                     "from jobs.spark_session import get_spark\n"
                     "spark = get_spark('probe')\n"
                     "path = sys.argv[1]\n"
                     "spark.range(3).write.format('delta').save(path)\n"
                     "print('ROWS=%d' % spark.read.format('delta').load(path).count())\n"
                     "hadoop = spark.sparkContext._jsc.hadoopConfiguration()\n"
                     "for key in ('fs.s3a.endpoint', 'fs.s3a.endpoint.region', 'fs.s3a.path.style.access'):\n"
                     "    print(f'{key}={hadoop.get(key)}')\n")
    done = subprocess.run([str(PROJECT_ROOT / "scripts" / "submit"), "--master", "local[1]",
                           "--conf", "spark.hadoop.fs.s3a.endpoint.region=eu-west-1",
                           str(probe), f"s3a://{bucket}/lake/probe"],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **SHORT_LIVED_JVM,
                               **object_store.env()})
    assert done.returncode == 0, done.stderr[-3000:]
    lines = set(done.stdout.splitlines())
    assert {"ROWS=3", f"fs.s3a.endpoint={object_store.endpoint}", "fs.s3a.endpoint.region=eu-west-1",
            "fs.s3a.path.style.access=true"} <= lines, done.stdout
