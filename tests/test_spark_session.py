"""The session helper wires Delta Lake from local jars."""
from pathlib import Path

import pytest

from jobs.spark_session import (DRIVER_LIBRARY_PATH, S3A_CREDENTIALS_PROVIDERS, MissingJarsError, delta_jars,
                                 s3a_conf, s3a_jars, session_conf, with_library_path)
from schemas.settings import load_conf
from schemas.storage import S3Settings
from tests.jvm import SHORT_LIVED_JVM


def test_delta_jars_missing_names_the_fix(tmp_path: Path):
    """An empty jars folder fails with the make target that fills it."""
    with pytest.raises(MissingJarsError, match="make jars"):
        delta_jars(tmp_path)


def test_s3a_jars_are_optional(tmp_path: Path):
    """No s3a folder: no s3a jars (Delta alone still works); a fetched one: all its jars."""
    assert s3a_jars(tmp_path) == []
    (tmp_path / "s3a").mkdir()
    (tmp_path / "s3a" / "hadoop-aws-3.5.0.jar").touch()
    (tmp_path / "s3a" / ".fetched").touch()
    assert [p.name for p in s3a_jars(tmp_path)] == ["hadoop-aws-3.5.0.jar"]


def test_s3a_settings_come_from_storage_conf(monkeypatch):
    """conf/storage.toml (here through its environment overrides) becomes the session's s3a settings."""
    monkeypatch.setenv("RECSYS__STORAGE__S3__ENDPOINT", '"http://127.0.0.1:9000"')
    monkeypatch.setenv("RECSYS__STORAGE__S3__PATH_STYLE", "true")
    monkeypatch.setenv("RECSYS__STORAGE__S3__REGION", '"eu-west-1"')
    conf = session_conf(load_conf("spark"), S3Settings.load(), existing={})
    assert {key: value for key, value in conf.items() if key.startswith("spark.hadoop.fs.s3a.")} == {
        "spark.hadoop.fs.s3a.endpoint": "http://127.0.0.1:9000",
        "spark.hadoop.fs.s3a.connection.ssl.enabled": "false",
        "spark.hadoop.fs.s3a.path.style.access": "true",
        "spark.hadoop.fs.s3a.endpoint.region": "eu-west-1",
        "spark.hadoop.fs.s3a.aws.credentials.provider": S3A_CREDENTIALS_PROVIDERS,
    }
    assert conf["spark.sql.session.timeZone"] == "UTC"  # conf/spark.toml's settings are still there


def test_aws_endpoint_sets_no_endpoint():
    """An empty endpoint leaves s3a on AWS's own endpoint for the region, over TLS."""
    conf = s3a_conf(S3Settings(endpoint="", region="us-east-1", path_style=False))
    assert "spark.hadoop.fs.s3a.endpoint" not in conf and "spark.hadoop.fs.s3a.connection.ssl.enabled" not in conf
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "false"
    https = s3a_conf(S3Settings(endpoint="https://s3.example.com", region="x", path_style=True))
    assert https["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "true"


def test_explicit_spark_conf_wins_over_storage_conf():
    """A key spark-submit already set is left alone; conf/spark.toml's [conf] (or a test's
    overrides) wins over conf/storage.toml."""
    existing = {"spark.hadoop.fs.s3a.endpoint": "http://store.internal:9000", "spark.sql.session.timeZone": "CET"}
    spark_settings = load_conf("spark", {"conf": {"spark.hadoop.fs.s3a.path.style.access": "false"}})
    conf = session_conf(spark_settings, S3Settings(endpoint="http://127.0.0.1:9000", region="r", path_style=True),
                        existing)
    assert "spark.hadoop.fs.s3a.endpoint" not in conf and "spark.sql.session.timeZone" not in conf
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "false"


def test_per_bucket_s3a_conf_names_the_bucket():
    """Per-bucket keys apply to that bucket only (Hadoop's fs.s3a.bucket.<name>.<key>)."""
    conf = s3a_conf(S3Settings(endpoint="http://127.0.0.1:9000", region="us-east-1", path_style=True), "lake-1")
    assert conf["spark.hadoop.fs.s3a.bucket.lake-1.endpoint"] == "http://127.0.0.1:9000"
    assert all(key.startswith("spark.hadoop.fs.s3a.bucket.lake-1.") for key in conf)


def test_library_path_goes_first_once():
    """conf's library folder goes in front of LD_LIBRARY_PATH, without repeating it."""
    assert with_library_path(None, "/blas") == "/blas"
    assert with_library_path("/a:/b", "/blas") == "/blas:/a:/b"
    assert with_library_path("/a:/blas:", "/blas") == "/blas:/a"
    assert with_library_path("/a", None) == "/a"
    assert with_library_path(None, "") is None


@pytest.mark.spark
def test_local_jvm_loads_blas_from_the_configured_folder(spark):
    """The JVM that get_spark starts has conf/spark.toml's library folder first on its
    library path, and netlib's native BLAS loads OpenBLAS from there when it exists."""
    folder = load_conf("spark")["conf"][DRIVER_LIBRARY_PATH]
    jvm = spark._jvm
    assert (jvm.java.lang.System.getenv("LD_LIBRARY_PATH") or "").split(":")[0] == folder
    if not Path(folder, "libblas.so.3").exists():
        pytest.skip(f"no {folder}/libblas.so.3 here (make system-packages installs it)")
    assert jvm.dev.ludovic.netlib.blas.NativeBLAS.getInstance().getClass().getSimpleName() == "JNIBLAS"
    pid = int(jvm.java.lang.ProcessHandle.current().pid())
    mapped = {line.split()[-1] for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
              if "blas" in line and "/" in line}
    assert f"{folder}/libblas.so.3" in mapped, mapped


@pytest.mark.spark
def test_session_reads_and_writes_delta(spark, tmp_path: Path):
    """A Delta table round-trips through the shared session."""
    path = str(tmp_path / "t")
    spark.range(5).write.format("delta").save(path)
    assert spark.read.format("delta").load(path).count() == 5
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"


@pytest.mark.spark
def test_spark_submit_settings_win_over_conf(tmp_path: Path):
    """`scripts/submit --master local[1]`: the job's session runs on local[1], not on
    conf/spark.toml's local[*] (a cluster's --master must reach the session); the
    driver memory, JVM options and library path of conf/spark.toml reach the driver JVM."""
    import os
    import subprocess

    from schemas.settings import PROJECT_ROOT

    probe = tmp_path / "probe.py"
    probe.write_text("from jobs.spark_session import get_spark\n"
                     "spark = get_spark('probe')\n"
                     "print('MASTER=' + spark.sparkContext.master)\n"
                     "print('PARTITIONS=' + spark.conf.get('spark.sql.shuffle.partitions'))\n"
                     "jvm = spark._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean()\n"
                     "print('JVM=' + ' '.join(jvm.getInputArguments()))\n"
                     "print('LIBS=' + str(spark._jvm.java.lang.System.getenv('LD_LIBRARY_PATH')))\n")
    done = subprocess.run([str(PROJECT_ROOT / "scripts" / "submit"), "--master", "local[1]",
                           "--conf", "spark.sql.shuffle.partitions=7", str(probe)],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **SHORT_LIVED_JVM})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "MASTER=local[1]" in done.stdout and "PARTITIONS=7" in done.stdout, done.stdout
    spark_conf = load_conf("spark")["conf"]
    jvm = next(line for line in done.stdout.splitlines() if line.startswith("JVM=")).split()
    assert f"-Xmx{spark_conf['spark.driver.memory']}" in jvm
    assert spark_conf["spark.driver.extraJavaOptions"] in jvm
    libs = next(line for line in done.stdout.splitlines() if line.startswith("LIBS="))
    assert spark_conf[DRIVER_LIBRARY_PATH] in libs.removeprefix("LIBS=").split(":"), libs
