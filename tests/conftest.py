"""Shared fixtures. One local SparkSession serves the whole run (a JVM start costs ~10 s)."""
from __future__ import annotations

import os

import pytest

# The lookup server fixtures (app, client, make_app, snapshot_root) for every test module.
pytest_plugins = ["tests.lookup_fixtures", "tests.redis_fixtures"]

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def spark():
    """A local[2] SparkSession with Delta Lake, shared by every test that asks for it."""
    from jobs.spark_session import get_spark

    session = get_spark("recsys-tests", overrides={
        "master": "local[2]",
        "conf": {"spark.sql.shuffle.partitions": "2", "spark.default.parallelism": "2",
                 "spark.driver.memory": "2g"},
    })
    yield session
    session.stop()
