#!/usr/bin/env bash
# `make airflow`: a local Airflow 3 (scheduler, DAG processor, triggerer, and the API server
# with the UI on 127.0.0.1:$AIRFLOW_PORT) with the nightly and hourly DAGs, plus a lookup
# server on :$PORT that answers from the snapshots the DAGs publish.
#
#   airflow_dags/standalone.sh         start, and stay in the foreground; Ctrl-C stops it all
#   airflow_dags/standalone.sh stop    stop it from another shell (`make airflow-stop`)
#
# Each component runs in a session of its own (setsid), with its pid in
# $RECSYS_AIRFLOW_STATE/run/ and its output in $RECSYS_AIRFLOW_STATE/logs/. Stopping sends
# SIGTERM to the components (the scheduler lets running tasks finish), waits
# [stop_timeout_seconds] of conf/airflow.toml, then terminates and finally kills whatever
# is left in their sessions: task runners, spark-submit and their JVMs included.
# (Not `airflow standalone`: it pipes every component's output through itself, so when it
# dies first an executor worker blocks on a full pipe and the scheduler waits for it forever.)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
source airflow_dags/env.sh
py=$root/.venv/bin/python
run_dir=$RECSYS_AIRFLOW_STATE/run
log_dir=$RECSYS_AIRFLOW_STATE/logs
supervisor_pid=$run_dir/supervisor.pid
# Stopped in this order: the API server last, so that tasks finishing in the grace
# period can still report their state through it.
components=(scheduler dag-processor triggerer api-server lookup-server)

say() { printf '%s airflow: %s\n' "$(date -u +%H:%M:%S)" "$*"; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
session_left() { pgrep -s "$1" >/dev/null 2>&1; }   # any process left in session $1
# A task's own command can leave the component's session (the BashOperator starts it with
# setsid), so stopping also follows the process tree, recorded before the first signal:
# once its parent dies, an orphan is no longer anyone's child.
family=()
tree() { local pid; for pid in "$@"; do echo "$pid"; tree $(pgrep -P "$pid"); done; }
record_family() { local sid; for sid in "$@"; do family+=($(tree $(pgrep -s "$sid"))); done; }
family_left() { local pid; for pid in "${family[@]}"; do kill -0 "$pid" 2>/dev/null && return 0; done; return 1; }
signal_family() { local pid; for pid in "${family[@]}"; do kill "-$1" "$pid" 2>/dev/null || true; done; }

wait_gone() {  # wait_gone SECONDS SID...: until those sessions and the recorded family are gone; 1 if not in time
  local deadline=$((SECONDS + $1)); shift
  while :; do
    local left=0 sid
    for sid in "$@"; do session_left "$sid" && left=1; done
    [ $left = 0 ] && ! family_left && return 0
    [ $SECONDS -ge $deadline ] && return 1
    sleep 0.5
  done
}

stop_components() {
  local grace name sids=() airflow_sids=()
  grace=$("$py" -c 'from schemas.settings import load_conf; print(int(load_conf("airflow")["stop_timeout_seconds"]))')
  for name in "${components[@]}"; do
    [ -f "$run_dir/$name.pid" ] || continue
    sids+=("$(cat "$run_dir/$name.pid")")
    [ "$name" = api-server ] || [ "$name" = lookup-server ] || airflow_sids+=("$(cat "$run_dir/$name.pid")")
  done
  [ ${#sids[@]} -gt 0 ] || return 0
  say "stopping (up to ${grace} s for running tasks to finish)"
  record_family "${airflow_sids[@]}"   # the API and lookup servers start nothing outside their sessions
  for sid in "${airflow_sids[@]}"; do kill -TERM "$sid" 2>/dev/null || true; done
  wait_gone "$grace" "${airflow_sids[@]}" || {
    say "still running after ${grace} s: terminating every task and process left"
    record_family "${airflow_sids[@]}"
    for sid in "${airflow_sids[@]}"; do pkill -TERM -s "$sid" 2>/dev/null || true; done
    signal_family TERM
    wait_gone 10 "${airflow_sids[@]}" || true; }
  for sid in "${sids[@]}"; do kill -TERM "$sid" 2>/dev/null || true; done
  wait_gone 15 "${sids[@]}" || true
  for sid in "${sids[@]}"; do
    if session_left "$sid"; then say "killing what is left of session $sid"; pkill -KILL -s "$sid" 2>/dev/null || true; fi
  done
  family_left && { say "killing what is left of their process trees"; signal_family KILL; }
  wait_gone 5 "${sids[@]}" || say "processes left in sessions ${sids[*]}: see 'ps -s ${sids[*]// /,}'"
  for name in "${components[@]}"; do rm -f "$run_dir/$name.pid"; done
  say "stopped"
}

stop() {
  if alive "$supervisor_pid"; then   # the foreground `make airflow` stops its own components
    local pid; pid=$(cat "$supervisor_pid")
    kill -TERM "$pid"
    # Its EXIT trap removes the pid file last (kill -0 would also see it as a zombie until reaped).
    while [ -f "$supervisor_pid" ] && kill -0 "$pid" 2>/dev/null; do sleep 0.5; done
    say "stopped (pid $pid)"
  else
    stop_components   # its supervisor is gone (killed, terminal closed): stop what it left
    rm -f "$supervisor_pid"
  fi
}

start_component() {  # start_component NAME COMMAND...: in a session of its own, output to its log
  setsid "${@:2}" >"$log_dir/$1.log" 2>&1 </dev/null &
  echo $! >"$run_dir/$1.pid"
}

start() {
  if alive "$supervisor_pid"; then
    echo "Airflow is already running (pid $(cat "$supervisor_pid")); stop it with: make airflow-stop" >&2
    exit 1
  fi
  mkdir -p "$AIRFLOW_HOME" "$RECSYS_DATA_DIR" "$run_dir" "$log_dir"
  stop_components   # anything a killed supervisor left behind
  echo $$ >"$supervisor_pid"
  trap 'stop_components; rm -f "$supervisor_pid"' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  if [ ! -d "$RECSYS_DATA_DIR/landing/events" ]; then
    say "generating sample landing files in $RECSYS_DATA_DIR/landing"
    "$py" -m jobs.generate_data --out "$RECSYS_DATA_DIR/landing" --users 5000 --products 1000 --events 200000 --seed 42 >/dev/null
  fi
  airflow db migrate >"$log_dir/db-migrate.log" 2>&1 || { cat "$log_dir/db-migrate.log"; exit 1; }
  airflow pools set recsys_lake 1 "recsys: one ingest, snapshot build or publish at a time" >/dev/null

  local target
  target=$("$py" -c 'from schemas.settings import load_conf; print(load_conf("jobs")["publish"]["target"])')
  case $target in /*|*://*) ;; *) target=$RECSYS_DATA_DIR/$target ;; esac
  mkdir -p "$target"
  RECSYS__SERVER__SNAPSHOT_DIR=$target LOOKUP_BIND=127.0.0.1:${PORT:-8000} \
    start_component lookup-server "$root/.venv/bin/gunicorn" -c conf/gunicorn.conf.py
  local name
  for name in scheduler dag-processor triggerer api-server; do start_component "$name" airflow "$name"; done
  say "starting ${components[*]} (${AIRFLOW__CORE__PARALLELISM} executor workers; logs in $log_dir)"

  local health=$AIRFLOW__API__BASE_URL/api/v2/monitor/health deadline=$((SECONDS + 300))
  until curl -sf "$health" 2>/dev/null | grep -q '"scheduler":{"status":"healthy"'; do
    for name in "${components[@]}"; do
      alive "$run_dir/$name.pid" || { say "$name exited during start-up; last lines of $log_dir/$name.log:"; tail -n 30 "$log_dir/$name.log"; exit 1; }
    done
    [ $SECONDS -lt $deadline ] || { say "not healthy after 300 s: $health"; exit 1; }
    sleep 1
  done

  cat <<MSG
Airflow UI:     $AIRFLOW__API__BASE_URL  (DAGs "nightly" and "hourly", paused; see "Scheduling (Airflow)" in the README)
Airflow CLI:    scripts/airflow dags list-runs nightly   (or: source airflow_dags/env.sh; airflow ...)
lookup server:  http://127.0.0.1:${PORT:-8000}  serving $target
  curl -s 'http://127.0.0.1:${PORT:-8000}/v1/users/16/recommendations?k=5'
data dir:       $RECSYS_DATA_DIR
logs:           $log_dir/{scheduler,dag-processor,triggerer,api-server,lookup-server}.log
stop:           Ctrl-C here, or make airflow-stop
MSG
  wait -n || true   # a component exited on its own: say which, and stop the rest (EXIT trap)
  for name in "${components[@]}"; do
    if ! alive "$run_dir/$name.pid"; then say "$name exited; last lines of $log_dir/$name.log:"; tail -n 20 "$log_dir/$name.log"; fi
  done
  exit 1
}

case ${1:-start} in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 [start|stop]" >&2; exit 2 ;;
esac
