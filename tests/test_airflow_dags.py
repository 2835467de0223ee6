"""The DAGs as Airflow itself loads them: no import errors, the task graphs, schedules,
retries, timeouts and the spark-submit arguments.

Airflow lives in its own virtualenv (``make airflow-venv``), so a real DagBag is filled
there and described as JSON; the assertions run here.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

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


# Runs triggered as `airflow dags trigger <dag>` (and the UI's button) do, with no logical
# date and so no data interval, then every task's templates rendered as `airflow tasks render`
# does; and the same for a run with a data interval. One process: each CLI start costs ~5 s.
RENDER_RUNS = r"""
import ast, contextlib, io, json
from airflow.cli.cli_parser import get_parser
from airflow.dag_processing.dagbag import BundleDagBag

def cli(*argv):
    args = get_parser().parse_args(list(argv))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        args.func(args)
    return out.getvalue()

def application_args(dag_id, task_id, run):
    lines = cli("tasks", "render", dag_id, task_id, run).splitlines()
    return ast.literal_eval(lines[lines.index("# property: application_args") + 2])

cli("db", "migrate")
cli("dags", "reserialize")
folder = __import__("os").environ["AIRFLOW__CORE__DAGS_FOLDER"]
out = {}
for dag_id, dag in BundleDagBag(dag_folder=folder, bundle_path=folder).dags.items():
    run = json.loads(cli("dags", "trigger", dag_id, "-o", "json").strip().splitlines()[-1])[0]
    listed = json.loads(cli("dags", "list-runs", dag_id, "-o", "json").strip().splitlines()[-1])
    out[dag_id] = {"run": run, "run_after": next(r["run_after"] for r in listed if r["run_id"] == run["dag_run_id"]),
                   "manual": {t: application_args(dag_id, t, run["dag_run_id"]) for t in dag.task_ids},
                   "interval": {t: application_args(dag_id, t, "2026-10-31") for t in dag.task_ids}}
print(json.dumps(out))
"""


def airflow_env(home: Path) -> dict[str, str]:
    """This environment less any Airflow or recsys setting, with a throw-away AIRFLOW_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RECSYS"))}
    env.update(AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__CORE__DAGS_FOLDER=str(DAGS_FOLDER), RECSYS_DATA_DIR=str(home / "data"))
    return env


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory) -> dict:
    """The DagBag of airflow_dags/, described by Airflow's own loader."""
    assert AIRFLOW_PYTHON.exists(), f"{AIRFLOW_PYTHON} missing: run `make airflow-venv`"
    home = tmp_path_factory.mktemp("airflow-home")
    done = subprocess.run([str(AIRFLOW_PYTHON), "-c", DESCRIBE_DAGBAG, str(DAGS_FOLDER)], env=airflow_env(home),
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
    """ingest -> ALS, EASE, content, popularity in parallel -> hybrid and ranked in parallel
    -> evaluation -> build -> publish."""
    generators = ("als", "ease", "content", "popularity")
    assert edges(dagbag["dags"]["nightly"]) == {
        *(("ingest", g) for g in generators), *((g, "hybrid") for g in generators),
        *((g, "ranked") for g in generators), ("hybrid", "evaluation"), ("ranked", "evaluation"),
        ("evaluation", "build_snapshot"), ("build_snapshot", "publish"),
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
                                                 "--as-of", "{{ recsys_as_of(dag_run) }}"], where
            assert task["jars"] == (f"{PROJECT_ROOT}/.jars/delta-spark_*.jar,{PROJECT_ROOT}/.jars/delta-storage-*.jar"
                                    f",{PROJECT_ROOT}/.jars/s3a/*.jar"), where  # `make jars` fetched them
            assert task["packages"] is None, where
            python = str(PROJECT_ROOT / ".venv" / "bin" / "python")
            assert task["conf"]["spark.pyspark.python"] == task["conf"]["spark.pyspark.driver.python"] == python
            # What only applies at JVM start comes from conf/spark.toml on the command line.
            assert task["driver_memory"] == spark_conf["spark.driver.memory"], where
            for key in ("spark.driver.extraJavaOptions", "spark.executor.extraJavaOptions",
                        "spark.driver.extraLibraryPath", "spark.executor.extraLibraryPath"):
                assert task["conf"][key] == spark_conf[key], where


def test_with_shipped_code_tasks_submit_the_launcher_beside_the_zip(monkeypatch, tmp_path):
    """RECSYS_PY_FILES (a cluster): each task runs jobs.<job> from the zip through the
    launcher `make dist-jobs` puts beside it, nothing from the checkout."""
    import importlib.util

    monkeypatch.setenv("RECSYS_PY_FILES", str(tmp_path / "dist" / "recsys_jobs.zip"))
    monkeypatch.setenv("RECSYS_DATA_DIR", "s3a://bucket/recsys")
    spec = importlib.util.spec_from_file_location("support_under_test", DAGS_FOLDER / "recsys_dag_support.py")
    support = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(support)
    args = support.submit_args("build_snapshot")
    assert args["application"] == str(tmp_path / "dist" / "run_job.py")
    assert args["application_args"] == ["jobs.build_snapshot", "--data-dir", "s3a://bucket/recsys",
                                        "--as-of", "{{ recsys_as_of(dag_run) }}"]
    assert args["py_files"] == str(tmp_path / "dist" / "recsys_jobs.zip")


def test_writers_share_one_pool(dagbag):
    """Ingest, snapshot build and publish of both DAGs take the one-slot recsys_lake pool; the algorithms do not."""
    for dag in dagbag["dags"].values():
        pools = {task_id: task["pool"] for task_id, task in dag["tasks"].items()}
        assert {t for t, pool in pools.items() if pool == "recsys_lake"} == {"ingest", "build_snapshot", "publish"}


def test_run_as_of_prefers_the_interval_then_the_logical_date_then_the_trigger_time():
    """The --as-of of a run: its data interval's end, else its logical date, else the time it
    was triggered for, to the second (the support module imports only the standard library)."""
    sys.path.insert(0, str(DAGS_FOLDER))
    try:
        from recsys_dag_support import run_as_of
    finally:
        sys.path.remove(str(DAGS_FOLDER))
    end, logical = datetime(2026, 10, 31, tzinfo=timezone.utc), datetime(2026, 10, 30, tzinfo=timezone.utc)
    after = datetime(2026, 12, 5, 9, 15, 1, 437772, tzinfo=timezone.utc)
    run = SimpleNamespace(data_interval_end=end, logical_date=logical, run_after=after)
    assert run_as_of(run) == "2026-10-31T00:00:00+00:00"
    assert run_as_of(SimpleNamespace(data_interval_end=None, logical_date=logical, run_after=after)) == \
        "2026-10-30T00:00:00+00:00"
    assert run_as_of(SimpleNamespace(data_interval_end=None, logical_date=None, run_after=after)) == \
        "2026-12-05T09:15:01+00:00"


def test_runs_without_a_logical_date_render_every_task(tmp_path):
    """`airflow dags trigger nightly` (or hourly, or the UI's button) makes a run with no logical date
    and no data interval: every task's arguments still render, with --as-of = the time the run was
    triggered for; a run with an interval gets the interval's end, as before."""
    done = subprocess.run([str(AIRFLOW_PYTHON), "-c", RENDER_RUNS], env=airflow_env(tmp_path), cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(runs) == {"nightly", "hourly"}
    for dag_id, run in runs.items():
        assert run["run"]["logical_date"] is None and run["run"]["data_interval_end"] is None, dag_id
        triggered = datetime.fromisoformat(run["run_after"]).replace(microsecond=0).isoformat()
        assert run["manual"] and set(run["manual"]) == set(run["interval"]), dag_id
        for task_id, args in run["manual"].items():
            assert args == ["--data-dir", str(tmp_path / "data"), "--as-of", triggered], f"{dag_id}.{task_id}"
        for task_id, args in run["interval"].items():
            assert args[-2:] == ["--as-of", "2026-10-31T00:00:00+00:00"], f"{dag_id}.{task_id}"
