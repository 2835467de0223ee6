"""Shared fixtures. One local SparkSession serves the whole run (a JVM start costs ~10 s)."""
from __future__ import annotations

import os

import pytest

# The lookup server fixtures (app, client, make_app, snapshot_root) for every test module.
pytest_plugins = ["tests.lookup_fixtures", "tests.redis_fixtures", "tests.objectstore_fixtures"]

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# The longest modules first (as measured in CI, slowest first): `make test` runs modules in two
# processes in this order (--no-loadscope-reorder: xdist would put the modules with the most
# tests first), and a long module started last would finish the run alone on one core.
LONGEST_MODULES = ("test_airflow_nightly.py", "test_end_to_end.py", "test_quality_taobao.py",
                   "test_faults_jobs.py", "test_ingest.py", "test_airflow_dags.py", "test_evaluation.py",
                   "test_tuning.py", "test_landing_properties.py")


def pytest_collection_modifyitems(items):
    rank = {name: place for place, name in enumerate(LONGEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


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
