#!/usr/bin/env bash
# `make airflow`: a local Airflow 3 (standalone: scheduler, DAG processor, triggerer and
# the UI on 127.0.0.1:$AIRFLOW_PORT) with the nightly and hourly DAGs, plus a lookup server
# on :$PORT that answers from the snapshots the DAGs publish. Ctrl-C stops both.
# State lives in var/airflow/ (SQLite metadata, logs, data), which git ignores.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
py=$root/.venv/bin/python
airflow=$root/.venv-airflow/bin/airflow

export AIRFLOW_HOME=${AIRFLOW_HOME:-$root/var/airflow/home}
export RECSYS_DATA_DIR=${RECSYS_DATA_DIR:-$root/var/airflow/data}
export AIRFLOW__CORE__DAGS_FOLDER=$root/airflow_dags
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__API__HOST=${AIRFLOW__API__HOST:-127.0.0.1}
export AIRFLOW__API__PORT=${AIRFLOW_PORT:-8080}
# A local, single-user Airflow: no login page.
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS:-True}
# The Spark master: local by default; point it at a cluster with e.g.
#   AIRFLOW_CONN_SPARK_DEFAULT='{"conn_type": "spark", "host": "spark://spark-master:7077"}'
export AIRFLOW_CONN_SPARK_DEFAULT=${AIRFLOW_CONN_SPARK_DEFAULT:-'{"conn_type": "spark", "host": "local[*]"}'}
# The Spark provider needs spark-submit on PATH: the jobs' own pyspark has it (Airflow's
# environment only has pyspark-client, which does not).
SPARK_HOME=$("$py" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
# `airflow standalone` starts its components as `airflow ...` from PATH.
export SPARK_HOME PATH=$SPARK_HOME/bin:$root/.venv-airflow/bin:$PATH
export SPARK_LOCAL_IP=${SPARK_LOCAL_IP:-127.0.0.1} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}

mkdir -p "$AIRFLOW_HOME" "$RECSYS_DATA_DIR"
if [ ! -d "$RECSYS_DATA_DIR/landing/events" ]; then
  echo "generating sample landing files in $RECSYS_DATA_DIR/landing"
  "$py" -m jobs.generate_data --out "$RECSYS_DATA_DIR/landing" --users 5000 --products 1000 --events 200000 --seed 42 >/dev/null
fi
"$airflow" db migrate >"$AIRFLOW_HOME/db-migrate.log" 2>&1 || { cat "$AIRFLOW_HOME/db-migrate.log"; exit 1; }
"$airflow" pools set recsys_lake 1 "recsys: one ingest, snapshot build or publish at a time" >/dev/null

target=$("$py" -c 'from schemas.settings import load_conf; print(load_conf("jobs")["publish"]["target"])')
case $target in /*|*://*) ;; *) target=$RECSYS_DATA_DIR/$target ;; esac
mkdir -p "$target"
RECSYS__SERVER__SNAPSHOT_DIR=$target LOOKUP_BIND=127.0.0.1:${PORT:-8000} \
  "$root/.venv/bin/gunicorn" -c conf/gunicorn.conf.py >"$RECSYS_DATA_DIR/gunicorn.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT

cat <<MSG
Airflow UI:     http://127.0.0.1:$AIRFLOW__API__PORT  (DAGs "nightly" and "hourly"; trigger nightly)
lookup server:  http://127.0.0.1:${PORT:-8000}  serving $target (log: $RECSYS_DATA_DIR/gunicorn.log)
  curl -s 'http://127.0.0.1:${PORT:-8000}/v1/users/17/recommendations?k=5'
data dir:       $RECSYS_DATA_DIR
MSG
"$airflow" standalone
