"""The DAGs as Airflow itself loads them: no import errors, the task graphs, schedules,
retries, timeouts and the spark-submit arguments.

Airflow lives in its own virtualenv (``make airflow-venv``), so a real DagBag is filled
there and described as JSON; the assertions run here.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from schemas.settings import PROJECT_ROOT, load_conf

AIRFLOW_PYTHON = PROJECT_ROOT / ".venv-airflow" / "bin" / "python"
DAGS_FOLDER = PROJECT_ROOT / "airflow_dags"

DESCRIBE_DAGBAG = r"""
import json, sys
from pathlib import Path
from airflow.dag_processing.dagbag import BundleDagBag

folder = Path(sys.argv[1])
bag = BundleDagBag(dag_folder=folder, bundle_path=folder)
out = {"import_errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": {},
       "files": sorted(Path(p).name for p in bag.file_last_changed)}
for dag_id, dag in bag.dags.items():
    tasks = {}
    for task in dag.tasks:
        tasks[task.task_id] = {
            "operator": type(task).__name__,
            "downstream": sorted(task.downstream_task_ids),
            "retries": task.retries,
            "retry_exponential_backoff": float(task.retry_exponential_backoff),
            "retry_delay": task.retry_delay.total_seconds(),
            "max_retry_delay": task.max_retry_delay.total_seconds() if task.max_retry_delay else None,
            "execution_timeout": task.execution_timeout.total_seconds() if task.execution_timeout else None,
            "on_failure_callback": [f.__name__ for f in task.on_failure_callback or []],
            "on_retry_callback": [f.__name__ for f in task.on_retry_callback or []],
            "pool": task.pool,
            "conn_id": task._conn_id,
            "application": task.application,
            "application_args": task.application_args,
            "jars": task.jars,
            "conf": task.conf,
            "driver_memory": task._driver_memory,
            "packages": task.packages,
        }
    out["dags"][dag_id] = {
        "timetable": repr(dag.timetable),
        "catchup": dag.catchup,
        "max_active_runs": dag.max_active_runs,
        "dagrun_timeout": dag.dagrun_timeout.total_seconds() if dag.dagrun_timeout else None,
        "tasks": tasks,
    }
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory) -> dict:
    """The DagBag of airflow_dags/, described by Airflow's own loader."""
    assert AIRFLOW_PYTHON.exists(), f"{AIRFLOW_PYTHON} missing: run `make airflow-venv`"
    home = tmp_path_factory.mktemp("airflow-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RECSYS"))}
    env.update(AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__CORE__DAGS_FOLDER=str(DAGS_FOLDER), RECSYS_DATA_DIR=str(home / "data"))
    done = subprocess.run([str(AIRFLOW_PYTHON), "-c", DESCRIBE_DAGBAG, str(DAGS_FOLDER)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return {"data_dir": home / "data", **json.loads(done.stdout.strip().splitlines()[-1])}


def edges(dag: dict) -> set[tuple[str, str]]:
    return {(task_id, down) for task_id, task in dag["tasks"].items() for down in task["downstream"]}


def test_no_import_errors_and_both_dags(dagbag):
    """Both DAG files load; the support module is not parsed as a DAG file (.airflowignore)."""
    assert dagbag["import_errors"] == {}
    assert dagbag["files"] == ["hourly.py", "nightly.py"]
    assert set(dagbag["dags"]) == {"nightly", "hourly"}


def test_nightly_graph(dagbag):
    """ingest -> ALS, content, popularity in parallel -> hybrid -> evaluation -> build -> publish."""
    assert edges(dagbag["dags"]["nightly"]) == {
        ("ingest", "als"), ("ingest", "content"), ("ingest", "popularity"),
        ("als", "hybrid"), ("content", "hybrid"), ("popularity", "hybrid"),
        ("hybrid", "evaluation"), ("evaluation", "build_snapshot"), ("build_snapshot", "publish"),
    }


def test_hourly_graph(dagbag):
    """ingest -> popularity, content in parallel -> hybrid -> build -> publish; no ALS, no evaluation."""
    assert edges(dagbag["dags"]["hourly"]) == {
        ("ingest", "popularity"), ("ingest", "content"), ("popularity", "hybrid"), ("content", "hybrid"),
        ("hybrid", "build_snapshot"), ("build_snapshot", "publish"),
    }


def test_schedules(dagbag):
    """Nightly covers each UTC day, hourly each hour, as data intervals; one run at a time, no catch-up."""
    nightly, hourly = dagbag["dags"]["nightly"], dagbag["dags"]["hourly"]
    assert nightly["timetable"] == "CronDataIntervalTimetable(expression='0 0 * * *', timezone='UTC')"
    assert hourly["timetable"] == "CronDataIntervalTimetable(expression='0 * * * *', timezone='UTC')"
    for dag in (nightly, hourly):
        assert dag["max_active_runs"] == 1 and dag["catchup"] is False
    assert hourly["dagrun_timeout"] < 3600 < nightly["dagrun_timeout"]


def test_retries_backoff_timeouts_and_callbacks(dagbag):
    """Every task retries with exponential back-off, has a timeout, and logs its failure."""
    for dag_id, dag in dagbag["dags"].items():
        for task_id, task in dag["tasks"].items():
            where = f"{dag_id}.{task_id}"
            assert task["retries"] >= 1 and task["retry_exponential_backoff"] == 2.0, where
            assert 0 < task["retry_delay"] < task["max_retry_delay"], where
            assert task["execution_timeout"] and task["execution_timeout"] <= 2 * 3600, where
            assert task["on_failure_callback"] == ["log_task_failure"], where
            assert task["on_retry_callback"] == ["log_task_retry"], where
    assert dagbag["dags"]["nightly"]["tasks"]["ingest"]["retries"] == 2


def test_every_task_is_a_spark_submit_of_a_job(dagbag):
    """Each task spark-submits jobs/<name>.py on spark_default with the data dir, the interval's
    end as --as-of, the Delta jars from .jars (never --packages), the jobs' Python, and the driver
    memory, JVM options and library paths of conf/spark.toml."""
    jobs = {"build_snapshot": "build_snapshot", "publish": "publish_snapshot"}
    spark_conf = load_conf("spark")["conf"]
    for dag_id, dag in dagbag["dags"].items():
        for task_id, task in dag["tasks"].items():
            where = f"{dag_id}.{task_id}"
            assert task["operator"] == "SparkSubmitOperator" and task["conn_id"] == "spark_default", where
            script = PROJECT_ROOT / "jobs" / f"{jobs.get(task_id, task_id)}.py"
            assert Path(task["application"]) == script and script.is_file(), where
            assert task["application_args"] == ["--data-dir", str(dagbag["data_dir"]),
                                                 "--as-of", "{{ data_interval_end.isoformat() }}"], where
            assert task["jars"] == f"{PROJECT_ROOT}/.jars/delta-spark_*.jar,{PROJECT_ROOT}/.jars/delta-storage-*.jar"
            assert task["packages"] is None, where
            python = str(PROJECT_ROOT / ".venv" / "bin" / "python")
            assert task["conf"]["spark.pyspark.python"] == task["conf"]["spark.pyspark.driver.python"] == python
            # What only applies at JVM start comes from conf/spark.toml on the command line.
            assert task["driver_memory"] == spark_conf["spark.driver.memory"], where
            for key in ("spark.driver.extraJavaOptions", "spark.executor.extraJavaOptions",
                        "spark.driver.extraLibraryPath", "spark.executor.extraLibraryPath"):
                assert task["conf"][key] == spark_conf[key], where


def test_writers_share_one_pool(dagbag):
    """Ingest, snapshot build and publish of both DAGs take the one-slot recsys_lake pool; the algorithms do not."""
    for dag in dagbag["dags"].values():
        pools = {task_id: task["pool"] for task_id, task in dag["tasks"].items()}
        assert {t for t, pool in pools.items() if pool == "recsys_lake"} == {"ingest", "build_snapshot", "publish"}
