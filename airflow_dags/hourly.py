"""hourly: fresh popularity and content lists between nightly rebuilds.

ingest -> popularity, TF-IDF content (in parallel) -> hybrid -> build_snapshot -> publish.
ALS and the evaluation stay nightly; the hybrid is re-fused (seconds) so that the
default answers carry the new popular and content lists too. The snapshot is a full
build: see "Scheduling (Airflow)" in the README for why. --as-of = the end of the hour
(or, triggered without a logical date, the time it was triggered for).
"""
from datetime import datetime, timedelta, timezone

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG, CronDataIntervalTimetable

from recsys_dag_support import DEFAULT_ARGS, LAKE_POOL, MACROS, submit_args

HOURLY_ARGS = {**DEFAULT_ARGS, "retries": 1, "retry_delay": timedelta(minutes=1),
               "execution_timeout": timedelta(minutes=20)}

with DAG(
    dag_id="hourly",
    description="ingest, popularity + content, hybrid, snapshot, publish",
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=55),  # the next hour's run starts with fresh data anyway
    default_args=HOURLY_ARGS,
    user_defined_macros=MACROS,
    tags=["recsys"],
    doc_md=__doc__,
):
    ingest = SparkSubmitOperator(task_id="ingest", pool=LAKE_POOL, **submit_args("ingest"))
    popularity = SparkSubmitOperator(task_id="popularity", **submit_args("popularity"))
    content = SparkSubmitOperator(task_id="content", **submit_args("content"))
    hybrid = SparkSubmitOperator(task_id="hybrid", execution_timeout=timedelta(minutes=10), **submit_args("hybrid"))
    build_snapshot = SparkSubmitOperator(task_id="build_snapshot", pool=LAKE_POOL, **submit_args("build_snapshot"))
    publish = SparkSubmitOperator(task_id="publish", pool=LAKE_POOL, execution_timeout=timedelta(minutes=10),
                                  **submit_args("publish_snapshot"))

    ingest >> [popularity, content] >> hybrid >> build_snapshot >> publish
