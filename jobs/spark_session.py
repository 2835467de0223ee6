"""The one place a SparkSession is built.

Defaults come from ``conf/spark.toml`` and, for ``s3a://`` paths, ``conf/storage.toml``;
``spark-submit --master/--conf`` wins because settings already present in the SparkConf
are left alone.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Mapping

from schemas.settings import PROJECT_ROOT, load_conf
from schemas.storage import S3Settings

log = logging.getLogger(__name__)

DELTA_JAR_PREFIXES = ("delta-spark_", "delta-storage-")
DRIVER_LIBRARY_PATH = "spark.driver.extraLibraryPath"
# hadoop-aws and the AWS SDK modules it needs, in their own folder under jars_dir (`make jars`).
S3A_JARS_SUBDIR = "s3a"
# Keys from the standard AWS variables, else the host's role; never from a conf file
# (Hadoop's default list would also read fs.s3a.access.key from the configuration).
S3A_CREDENTIALS_PROVIDERS = ("software.amazon.awssdk.auth.credentials.EnvironmentVariableCredentialsProvider,"
                             "org.apache.hadoop.fs.s3a.auth.IAMInstanceCredentialsProvider")


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


def s3a_jars(jars_dir: Path) -> list[Path]:
    """The s3a:// jars (hadoop-aws, AWS SDK) under ``jars_dir``; none if `make jars` has not fetched them."""
    return sorted((jars_dir / S3A_JARS_SUBDIR).glob("*.jar"))


def s3a_conf(s3: S3Settings, bucket: str | None = None) -> dict[str, str]:
    """Spark settings that point ``s3a://`` at conf/storage.toml's ``[s3]`` store.

    With ``bucket``, Hadoop's per-bucket keys (``fs.s3a.bucket.<name>.*``): they win over
    the general ones for that bucket only, and take effect in a running session for a
    bucket it has not opened yet (each bucket gets its own FileSystem instance)."""
    prefix = f"spark.hadoop.fs.s3a.bucket.{bucket}." if bucket else "spark.hadoop.fs.s3a."
    conf = {"endpoint.region": s3.region,
            "path.style.access": str(s3.path_style).lower(),
            "aws.credentials.provider": S3A_CREDENTIALS_PROVIDERS}
    if s3.endpoint:
        conf["endpoint"] = s3.endpoint
        # S3A takes the scheme from the endpoint URL; this covers a bare host:port too.
        conf["connection.ssl.enabled"] = str(not s3.endpoint.startswith("http://")).lower()
    return {prefix + key: value for key, value in conf.items()}


def session_conf(spark_settings: Mapping, s3: S3Settings, existing: Mapping[str, str]) -> dict[str, str]:
    """The settings get_spark gives its builder: s3a's from conf/storage.toml, then
    conf/spark.toml's ``[conf]`` (which may override them); any key already in
    ``existing`` (what spark-submit set) is left out, so it wins."""
    conf = {**s3a_conf(s3), **{key: str(value) for key, value in spark_settings.get("conf", {}).items()}}
    return {key: value for key, value in conf.items() if key not in existing}


def with_library_path(current: str | None, extra: str | None) -> str | None:
    """``LD_LIBRARY_PATH`` with ``extra`` in front (once), or ``current`` if there is no extra."""
    if not extra:
        return current
    parts = [p for p in (current or "").split(os.pathsep) if p]
    return os.pathsep.join([extra, *[p for p in parts if p != extra]])


def get_spark(app_name: str | None = None, overrides: Mapping | None = None):
    """Return the active SparkSession, or build one with Delta Lake configured.

    ``overrides`` merges into ``conf/spark.toml`` (tests use it for small settings).
    Under ``spark-submit`` the JVM is already running, so the Delta and s3a jars must
    come from its ``--jars``: ``scripts/submit`` passes them.
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
        # Imported from dist/recsys_jobs.zip, PROJECT_ROOT is the zip: the working folder
        # then (spark-submit passes the jars with --jars, so this is rarely looked at).
        jars_dir = (PROJECT_ROOT if PROJECT_ROOT.is_dir() else Path.cwd()) / jars_dir
    if not existing.contains("spark.jars") or "delta" not in existing.get("spark.jars"):
        jars = [*delta_jars(jars_dir), *s3a_jars(jars_dir)]
        builder = builder.config("spark.jars", ",".join(str(p) for p in jars))
    for key, value in session_conf(settings, S3Settings.load(), dict(existing.getAll())).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("SPARK_LOG_LEVEL", "WARN"))
    log.info("Spark %s session %s on %s", spark.version, spark.sparkContext.appName, spark.sparkContext.master)
    return spark
