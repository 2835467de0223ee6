"""The one place a SparkSession is built.

Defaults come from ``conf/spark.toml``; ``spark-submit --master/--conf`` wins
because settings already present in the SparkConf are left alone.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Mapping

from schemas.settings import PROJECT_ROOT, load_conf

log = logging.getLogger(__name__)

DELTA_JAR_PREFIXES = ("delta-spark_", "delta-storage-")
DRIVER_LIBRARY_PATH = "spark.driver.extraLibraryPath"


class MissingJarsError(RuntimeError):
    """The Delta Lake jars are not in the jars folder; `make jars` fetches them."""


def delta_jars(jars_dir: Path) -> list[Path]:
    """The delta-spark and delta-storage jars in ``jars_dir``; raise if either is missing."""
    found = sorted(p for p in jars_dir.glob("*.jar") if p.name.startswith(DELTA_JAR_PREFIXES))
    for prefix in DELTA_JAR_PREFIXES:
        if not any(p.name.startswith(prefix) for p in found):
            raise MissingJarsError(
                f"no {prefix}*.jar in {jars_dir}: run `make jars` (Spark must not download at start-up)")
    return found


def with_library_path(current: str | None, extra: str | None) -> str | None:
    """``LD_LIBRARY_PATH`` with ``extra`` in front (once), or ``current`` if there is no extra."""
    if not extra:
        return current
    parts = [p for p in (current or "").split(os.pathsep) if p]
    return os.pathsep.join([extra, *[p for p in parts if p != extra]])


def get_spark(app_name: str | None = None, overrides: Mapping | None = None):
    """Return the active SparkSession, or build one with Delta Lake configured.

    ``overrides`` merges into ``conf/spark.toml`` (tests use it for small settings).
    Under ``spark-submit`` the JVM is already running, so the Delta jars must come
    from its ``--jars``: ``scripts/submit`` passes them.
    """
    from pyspark import SparkConf
    from pyspark.sql import SparkSession

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # ALS runs on native BLAS when libopenblas is present; one thread per task,
    # as Spark already runs one task per core.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # Python workers must run the driver's interpreter (the project's virtualenv),
    # not whatever python3 is first on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

    active = SparkSession.getActiveSession()
    if active is not None:
        return active

    settings = load_conf("spark", overrides)
    if os.environ.get("PYSPARK_GATEWAY_PORT"):
        # Under spark-submit the JVM is already up: attach to it first. Before that,
        # SparkConf() cannot see what spark-submit set, and conf/spark.toml's master
        # would replace --master (a job meant for a cluster would run locally).
        from pyspark import SparkContext

        SparkContext._ensure_initialized()
    else:
        # spark-submit puts spark.driver.extraLibraryPath on the driver JVM's library
        # path, but PySpark's own launch of a local JVM ignores it: do it here. It is
        # how the JVM finds the single-threaded OpenBLAS (see conf/spark.toml).
        library_path = with_library_path(os.environ.get("LD_LIBRARY_PATH"),
                                         settings.get("conf", {}).get(DRIVER_LIBRARY_PATH))
        if library_path:
            os.environ["LD_LIBRARY_PATH"] = library_path
    existing = SparkConf()  # holds whatever spark-submit already set
    builder = SparkSession.builder.appName(app_name or settings["app_name"])
    if not existing.contains("spark.master"):
        builder = builder.master(settings["master"])
    jars_dir = Path(settings["jars_dir"])
    if not jars_dir.is_absolute():
        jars_dir = PROJECT_ROOT / jars_dir
    if not existing.contains("spark.jars") or "delta" not in existing.get("spark.jars"):
        builder = builder.config("spark.jars", ",".join(str(p) for p in delta_jars(jars_dir)))
    for key, value in settings.get("conf", {}).items():
        if not existing.contains(key):
            builder = builder.config(key, str(value))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("SPARK_LOG_LEVEL", "WARN"))
    log.info("Spark %s session %s on %s", spark.version, spark.sparkContext.appName, spark.sparkContext.master)
    return spark
