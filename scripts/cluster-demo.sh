#!/usr/bin/env bash
# `make cluster-demo`: the multi-machine path, on loopback. An S3 API (scripts/objectstore)
# holds the lake and the published snapshots; a Spark standalone cluster (scripts/cluster:
# a master, two workers) runs Airflow's nightly DAG on the s3a:// lake with the code
# shipped as dist/recsys_jobs.zip; two lookup hosts (each a gunicorn and a
# `python -m lookup_server.sync` with its own local snapshot folder) pull what the DAG
# publishes and share one Redis for the real-time delta.
#   scripts/cluster-demo.sh          # run it (make cluster-demo: make setup, airflow-venv first)
#   scripts/cluster-demo.sh stop     # stop everything it started (make stop does too)
# Small generated data (USERS, PRODUCTS, EVENTS); state under CLUSTER_DEMO_DIR (var/cluster-demo).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
PY=${PY:-.venv/bin/python}
DIR=${CLUSTER_DEMO_DIR:-var/cluster-demo}
mkdir -p "$DIR"; DIR=$(cd "$DIR" && pwd)
USERS=${USERS:-1000}
PRODUCTS=${PRODUCTS:-200}
EVENTS=${EVENTS:-20000}
STORE_PORT=${OBJECTSTORE_PORT:-9000}
CLUSTER_PORT=${CLUSTER_PORT:-7077}
REDIS_PORT=${REDIS_PORT:-6390}
HOST_PORTS=(8101 8102)
SYNC_METRICS_PORTS=(9112 9113)
BUCKET=recsys
AS_OF=2026-10-31T00:00:00+00:00
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

# Every process here reaches the store as conf/storage.toml says, through these overrides;
# moto accepts any key.
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-cluster-demo} AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-cluster-demo-secret}
export AWS_EC2_METADATA_DISABLED=true
export RECSYS__STORAGE__S3__ENDPOINT="\"http://127.0.0.1:$STORE_PORT\"" RECSYS__STORAGE__S3__PATH_STYLE=true
export OBJECTSTORE_PORT=$STORE_PORT OBJECTSTORE_DIR=$DIR/objectstore CLUSTER_PORT CLUSTER_DIR=$DIR/cluster
DATA=s3a://$BUCKET/data
SERVING=s3a://$BUCKET/serving

stop_all() {
  for pidfile in "$DIR"/host-*/gunicorn.pid "$DIR"/host-*/sync.pid "$DIR"/redis.pid; do
    [ -f "$pidfile" ] || continue
    if kill "$(cat "$pidfile")" 2>/dev/null; then echo "stopped $(basename "$(dirname "$pidfile")")/$(basename "$pidfile" .pid)"; fi
    rm -f "$pidfile"
  done
  scripts/cluster stop
  scripts/objectstore stop
}

if [ "${1:-}" = stop ]; then stop_all; exit 0; fi
[ $# -eq 0 ] || { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
command -v redis-server >/dev/null || { echo "redis-server is needed (make system-packages)" >&2; exit 1; }
started=$(date +%s)
stop_all >/dev/null 2>&1 || true
rm -rf "$DIR"; mkdir -p "$DIR"

say "object store on 127.0.0.1:$STORE_PORT, Spark master spark://127.0.0.1:$CLUSTER_PORT with 2 workers, Redis on :$REDIS_PORT"
scripts/objectstore start --bucket "$BUCKET"
scripts/cluster start
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --pidfile "$DIR/redis.pid" --logfile "$DIR/redis.log" --dir "$DIR"

say "code shipped as a zip (conf inside), data generated and landed in $DATA/landing"
make --no-print-directory dist-jobs DIST="$DIR/dist" >/dev/null
"$PY" -m jobs.generate_data --users "$USERS" --products "$PRODUCTS" --events "$EVENTS" \
  --seed 42 --start 2026-10-01 --days 30 --out "$DIR/generated" >/dev/null
"$PY" -c 'import sys; from pathlib import Path; from schemas.storage import Location
Location.of(sys.argv[2]).upload_dir(Path(sys.argv[1]))' "$DIR/generated" "$DATA/landing"

say "Airflow's nightly DAG on the cluster: ingest -> algorithms -> evaluation -> snapshot -> publish to $SERVING"
spark_home=$("$PY" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
airflow_env=(
  AIRFLOW_HOME="$DIR/airflow" AIRFLOW__CORE__DAGS_FOLDER="$root/airflow_dags" AIRFLOW__CORE__LOAD_EXAMPLES=False
  AIRFLOW_CONN_SPARK_DEFAULT="{\"conn_type\": \"spark\", \"host\": \"spark://127.0.0.1:$CLUSTER_PORT\"}"
  SPARK_HOME="$spark_home" PATH="$spark_home/bin:$PATH" SPARK_LOCAL_IP=127.0.0.1
  RECSYS_DATA_DIR="$DATA" RECSYS_PY_FILES="$DIR/dist/recsys_jobs.zip" RECSYS__JOBS__PUBLISH__TARGET="\"$SERVING\""
)
(
  cd "$DIR"  # nothing is imported from the checkout by accident: the tasks run the zip
  env "${airflow_env[@]}" "$root/.venv-airflow/bin/airflow" db migrate >"$DIR/airflow-migrate.log" 2>&1
  env "${airflow_env[@]}" "$root/.venv-airflow/bin/airflow" pools set recsys_lake 1 "recsys writers" >/dev/null 2>&1
  env "${airflow_env[@]}" "$root/.venv-airflow/bin/airflow" dags test nightly "${AS_OF%%T*}" >"$DIR/nightly.log" 2>&1
) || { echo "the nightly DAG failed; see $DIR/nightly.log" >&2; tail -n 30 "$DIR/nightly.log" >&2; exit 1; }
echo "  tasks run: $(grep -Eo '\[DAG TEST\] starting task_id=[a-z_]+' "$DIR/nightly.log" | sed 's/.*=//' | paste -sd' ' -)"

say "two lookup hosts, each pulling $SERVING into its own folder"
for i in 0 1; do
  host="$DIR/host-$((i + 1))"; mkdir -p "$host"
  host_env=(RECSYS_DATA_DIR="$host" RECSYS__SERVER__SYNC__SOURCE="\"$SERVING\""
            RECSYS__SERVER__DELTA__REDIS_URL="\"redis://127.0.0.1:$REDIS_PORT/0\"")
  env "${host_env[@]}" setsid "$PY" -m lookup_server.sync --metrics-port "${SYNC_METRICS_PORTS[$i]}" \
    >"$host/sync.log" 2>&1 &
  echo $! >"$host/sync.pid"
  env "${host_env[@]}" LOOKUP_BIND="127.0.0.1:${HOST_PORTS[$i]}" \
    .venv/bin/gunicorn -c conf/gunicorn.conf.py --daemon --pid "$host/gunicorn.pid" --error-logfile "$host/gunicorn.log"
done
# Ready once every worker of both hosts has the pulled snapshot (a worker that has not
# would answer 503): a few /readyz in a row must all say so.
ready() { for _ in 1 2 3 4; do curl -sf "http://127.0.0.1:$1/readyz" >/dev/null || return 1; done; }
for port in "${HOST_PORTS[@]}"; do
  waited=0
  until ready "$port"; do
    sleep 0.2; waited=$((waited + 1))
    [ "$waited" -lt 300 ] || { echo "host :$port not ready after 60 s; see $DIR/host-*/" >&2; exit 1; }
  done
done

say "ready in $(( $(date +%s) - started )) s. Both hosts answer from the published version:"
user=$(head -n 1 "$(ls "$DIR"/generated/events/*.jsonl | head -n 1)" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["user_id"])')
for port in "${HOST_PORTS[@]}"; do
  url="http://127.0.0.1:$port/v1/users/$user/recommendations?k=3"
  echo "curl -s '$url'"
  curl -s "$url"; echo
done
echo
echo "sync metrics: curl -s http://127.0.0.1:${SYNC_METRICS_PORTS[0]}/metrics | grep recsys_sync_"
echo "cluster: http://127.0.0.1:$((CLUSTER_PORT + 1))/    logs: $DIR    stop: make stop"
