# The environment of this project's local Airflow. Sourced by standalone.sh (`make airflow`)
# and scripts/airflow; in a shell, `source airflow_dags/env.sh` makes `airflow ...` use it.
# Every variable already set in the environment wins.
_recsys_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

export RECSYS_AIRFLOW_STATE=${RECSYS_AIRFLOW_STATE:-$_recsys_root/var/airflow}   # pid files in run/, logs in logs/
export AIRFLOW_HOME=${AIRFLOW_HOME:-$RECSYS_AIRFLOW_STATE/home}                  # SQLite metadata, task logs
export RECSYS_DATA_DIR=${RECSYS_DATA_DIR:-$RECSYS_AIRFLOW_STATE/data}           # every job's --data-dir
export AIRFLOW__CORE__DAGS_FOLDER=${AIRFLOW__CORE__DAGS_FOLDER:-$_recsys_root/airflow_dags}
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__API__HOST=${AIRFLOW__API__HOST:-127.0.0.1}
export AIRFLOW__API__PORT=${AIRFLOW_PORT:-${AIRFLOW__API__PORT:-8080}}
# Task runners reach the API server here ({base_url}/execution/); without it they assume :8080.
export AIRFLOW__API__BASE_URL=${AIRFLOW__API__BASE_URL:-http://$AIRFLOW__API__HOST:$AIRFLOW__API__PORT}
# A local, single-user Airflow: no login page.
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS:-True}
# The Spark master of every task: local by default; a cluster, e.g.
#   AIRFLOW_CONN_SPARK_DEFAULT='{"conn_type": "spark", "host": "spark://spark-master:7077"}'
export AIRFLOW_CONN_SPARK_DEFAULT=${AIRFLOW_CONN_SPARK_DEFAULT:-'{"conn_type": "spark", "host": "local[*]"}'}
export SPARK_LOCAL_IP=${SPARK_LOCAL_IP:-127.0.0.1} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}

# From conf/airflow.toml: the executor's workers. The Spark provider needs spark-submit on
# PATH: the jobs' own pyspark has it (Airflow's environment only has pyspark-client).
eval "$("$_recsys_root/.venv/bin/python" - <<'PY'
import importlib.util, os, shlex
from schemas.settings import load_conf

workers = load_conf("airflow")["executor_workers"]
if not isinstance(workers, int) or workers < 0:
    raise SystemExit(f"conf/airflow.toml: executor_workers must be an integer >= 0, not {workers!r}")
spark_home = os.path.dirname(importlib.util.find_spec("pyspark").origin)
print(f"_recsys_workers={workers or os.cpu_count() or 1} _recsys_spark_home={shlex.quote(spark_home)}")
PY
)"
export AIRFLOW__CORE__PARALLELISM=${AIRFLOW__CORE__PARALLELISM:-$_recsys_workers}
export SPARK_HOME=${SPARK_HOME:-$_recsys_spark_home}
export PATH=$SPARK_HOME/bin:$_recsys_root/.venv-airflow/bin:$PATH
unset _recsys_root _recsys_workers _recsys_spark_home
