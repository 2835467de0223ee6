"""nightly: the full rebuild for the day that just ended.

ingest -> ALS, EASE, TF-IDF content, popularity (in parallel) -> hybrid and the learned
ranking over all four (in parallel) -> evaluation -> build_snapshot -> publish. Every task is one job of `jobs/`, submitted with
spark-submit through the `spark_default` connection, with --as-of = the end of the
run's data interval (midnight UTC); a run triggered without a logical date gets
the time it was triggered for (recsys_dag_support.run_as_of).
"""
from datetime import datetime, timedelta, timezone

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG, CronDataIntervalTimetable

from recsys_dag_support import DEFAULT_ARGS, LAKE_POOL, MACROS, submit_args

with DAG(
    dag_id="nightly",
    description="ingest, ALS + EASE + content + popularity, hybrid + ranked, evaluation, snapshot, publish",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=8),
    default_args=DEFAULT_ARGS,
    user_defined_macros=MACROS,
    tags=["recsys"],
    doc_md=__doc__,
):
    ingest = SparkSubmitOperator(task_id="ingest", pool=LAKE_POOL, execution_timeout=timedelta(hours=1),
                                 **submit_args("ingest"))
    als = SparkSubmitOperator(task_id="als", execution_timeout=timedelta(hours=2), **submit_args("als"))
    ease = SparkSubmitOperator(task_id="ease", execution_timeout=timedelta(hours=1), **submit_args("ease"))
    content = SparkSubmitOperator(task_id="content", execution_timeout=timedelta(hours=1), **submit_args("content"))
    popularity = SparkSubmitOperator(task_id="popularity", execution_timeout=timedelta(minutes=30),
                                     **submit_args("popularity"))
    hybrid = SparkSubmitOperator(task_id="hybrid", execution_timeout=timedelta(minutes=30), **submit_args("hybrid"))
    ranked = SparkSubmitOperator(task_id="ranked", execution_timeout=timedelta(hours=1), **submit_args("ranked"))
    evaluation = SparkSubmitOperator(task_id="evaluation", execution_timeout=timedelta(hours=2),
                                     **submit_args("evaluation"))
    build_snapshot = SparkSubmitOperator(task_id="build_snapshot", pool=LAKE_POOL,
                                         execution_timeout=timedelta(hours=1), **submit_args("build_snapshot"))
    publish = SparkSubmitOperator(task_id="publish", pool=LAKE_POOL, execution_timeout=timedelta(minutes=20),
                                  **submit_args("publish_snapshot"))

    ingest >> [als, ease, content, popularity] >> hybrid
    [als, ease, content, popularity] >> ranked
    [hybrid, ranked] >> evaluation >> build_snapshot >> publish
