"""What the recsys DAGs share: where the project and its data are, how a job is
submitted, retries and timeouts, and the failure callback.

Standard library only: the DAG processor imports this on every parse.

Read from the environment when the DAG files are parsed:

``RECSYS_PROJECT_ROOT``  the project checkout (default: the folder above ``airflow_dags/``)
``RECSYS_DATA_DIR``      every job's ``--data-dir`` (default: ``<root>/var``, as conf/jobs.toml)
``RECSYS_JOBS_PYTHON``   Python of the Spark driver and executors (default: ``<root>/.venv/bin/python``)
``RECSYS_JARS_DIR``      folder with the Delta jars, on every node (default: ``<root>/.jars``)
``RECSYS_PY_FILES``      ``--py-files`` for a cluster: ``dist/recsys_jobs.zip`` (``make dist-jobs``); tasks then
                        submit ``run_job.py`` beside it, which runs ``jobs.<job>`` from the zip

``spark-submit`` must be on the worker's PATH (``$SPARK_HOME/bin``), and the master comes
from the ``spark_default`` connection (``AIRFLOW_CONN_SPARK_DEFAULT``).
"""
from __future__ import annotations

import logging
import os
import tomllib
from datetime import timedelta
from pathlib import Path

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(os.environ.get("RECSYS_PROJECT_ROOT") or Path(__file__).resolve().parents[1])
# A URL (s3a://…, hdfs://…) is passed as it is; a relative folder is under the project root.
DATA_DIR = os.environ.get("RECSYS_DATA_DIR") or str(PROJECT_ROOT / "var")
if "://" not in DATA_DIR and not Path(DATA_DIR).is_absolute():
    DATA_DIR = str(PROJECT_ROOT / DATA_DIR)
JOBS_PYTHON = os.environ.get("RECSYS_JOBS_PYTHON") or str(PROJECT_ROOT / ".venv" / "bin" / "python")
JARS_DIR = Path(os.environ.get("RECSYS_JARS_DIR") or PROJECT_ROOT / ".jars")
PY_FILES = os.environ.get("RECSYS_PY_FILES") or None

SPARK_CONN_ID = "spark_default"
# Ingest, snapshot build and publish take this one-slot pool, so the nightly and hourly
# runs never ingest, build or publish at the same time (`make airflow` creates it).
LAKE_POOL = "recsys_lake"


def run_as_of(dag_run) -> str:
    """The ``--as-of`` of every job of a run: the end of its data interval when it has one
    (scheduled runs, backfills, runs triggered with a logical date), else its logical date,
    else the time it was triggered for (``run_after``: a manual or API trigger without a
    logical date has neither). All three are stored with the run, so clearing a task
    re-runs it with the same clock and gives the same lists."""
    moment = dag_run.data_interval_end or dag_run.logical_date or dag_run.run_after
    return moment.replace(microsecond=0).isoformat()


# Templates of the DAGs call run_as_of through this macro (DAG(user_defined_macros=MACROS)).
MACROS = {"recsys_as_of": run_as_of}
AS_OF = "{{ recsys_as_of(dag_run) }}"


JVM_START_OPTIONS = ("spark.driver.extraJavaOptions", "spark.executor.extraJavaOptions",
                     "spark.driver.extraLibraryPath", "spark.executor.extraLibraryPath")


def _spark_toml() -> dict:
    with open(PROJECT_ROOT / "conf" / "spark.toml", "rb") as fh:
        return tomllib.load(fh)


def job_args(*extra: str) -> list[str]:
    """The arguments every job takes, for this run's interval."""
    return ["--data-dir", DATA_DIR, "--as-of", AS_OF, *extra]


def jars() -> str:
    """``--jars``: Delta's, and the s3a:// ones when `make jars` fetched them (globs, resolved by spark-submit)."""
    globs = [f"{JARS_DIR}/delta-spark_*.jar", f"{JARS_DIR}/delta-storage-*.jar"]
    if any((JARS_DIR / "s3a").glob("*.jar")):
        globs.append(f"{JARS_DIR}/s3a/*.jar")
    return ",".join(globs)


def application(job: str, *extra: str) -> tuple[str, list[str]]:
    """The main file and its arguments: ``jobs/<job>.py`` of the checkout, or, with
    ``RECSYS_PY_FILES``, the launcher shipped beside the zip running ``jobs.<job>`` from it
    (so nothing is imported from a checkout the cluster may not have)."""
    if PY_FILES:
        launcher = Path(PY_FILES.split(",")[0]).with_name("run_job.py")
        return str(launcher), [f"jobs.{job}", *job_args(*extra)]
    return str(PROJECT_ROOT / "jobs" / f"{job}.py"), job_args(*extra)


def submit_args(job: str, *extra: str) -> dict:
    """``SparkSubmitOperator`` arguments that run ``jobs/<job>.py`` as ``scripts/submit`` does:
    the Delta jars on the classpath from JVM start (globs, resolved by spark-submit; Spark
    never downloads them), the jobs' Python for driver and executors, and the driver
    memory, JVM options and library paths from conf/spark.toml (the settings that must
    be known before the JVM starts; the job applies the rest of conf/spark.toml itself)."""
    spark_conf = _spark_toml().get("conf", {})
    jvm_options = {key: spark_conf[key] for key in JVM_START_OPTIONS if key in spark_conf}
    main_file, arguments = application(job, *extra)
    return {
        "conn_id": SPARK_CONN_ID,
        "application": main_file,
        "application_args": arguments,
        "name": f"recsys-{job.replace('_', '-')}",
        "jars": jars(),
        "py_files": PY_FILES,
        "driver_memory": spark_conf.get("spark.driver.memory"),
        "conf": {"spark.pyspark.python": JOBS_PYTHON, "spark.pyspark.driver.python": JOBS_PYTHON,
                 "spark.log.level": "WARN",  # the task log gets the job's own lines, not Spark's INFO
                 **jvm_options},
    }


def served_version() -> str:
    """The snapshot version the lookup servers' folder names in CURRENT, for the logs."""
    with open(PROJECT_ROOT / "conf" / "jobs.toml", "rb") as fh:
        target = tomllib.load(fh).get("publish", {}).get("target", "serving/snapshots")
    target = os.environ.get("RECSYS__JOBS__PUBLISH__TARGET", target).strip('"')
    if "://" in target or "://" in DATA_DIR:
        return f"(see CURRENT in {target})"
    path = Path(target) if Path(target).is_absolute() else Path(DATA_DIR) / target
    try:
        return (path / "CURRENT").read_text().strip() or "none"
    except OSError:
        return f"none (no {path}/CURRENT)"


def _describe(context) -> str:
    ti = context.get("ti") or context.get("task_instance")
    return (f"dag={context['dag'].dag_id if context.get('dag') else getattr(ti, 'dag_id', '?')} "
            f"task={getattr(ti, 'task_id', '?')} run={getattr(ti, 'run_id', '?')} "
            f"try={getattr(ti, 'try_number', '?')} "
            f"interval={context.get('data_interval_start')}..{context.get('data_interval_end')}")


def log_task_failure(context) -> None:
    """``on_failure_callback``: one line that says what failed, why, and what is still served."""
    error = context.get("exception")
    log.error("RECSYS TASK FAILED %s: %s. Downstream tasks will not run; the lookup servers keep "
              "snapshot %s. Fix the cause, then clear the task to re-run the interval (same --as-of, same result).",
              _describe(context), f"{type(error).__name__}: {error}" if error else "no exception recorded",
              served_version())


def log_task_retry(context) -> None:
    """``on_retry_callback``: a warning per failed try that will be retried."""
    error = context.get("exception")
    log.warning("recsys task will be retried %s: %s", _describe(context),
                f"{type(error).__name__}: {error}" if error else "no exception recorded")


DEFAULT_ARGS = {
    "owner": "recsys",
    "depends_on_past": False,
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": 2.0,      # 2 min, then 4 min
    "max_retry_delay": timedelta(minutes=30),
    "execution_timeout": timedelta(hours=1),
    "on_failure_callback": log_task_failure,
    "on_retry_callback": log_task_retry,
}
