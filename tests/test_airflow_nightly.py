"""The nightly DAG for real: a manual run triggered for 2026-10-31 without a logical date
(what `airflow dags trigger nightly` and the UI's button create) on tiny generated data,
every task a spark-submit on local Spark, ending with a published snapshot that a real
gunicorn answers from. Then a failed build. (A re-run of the interval is idempotent by
parts, each tested where it is cheap: ingest adds nothing on a re-run,
tests/test_ingest.py; equal tables give an equal snapshot, tests/test_build_snapshot.py.
Through Airflow it cost CI three more spark-submits.)

Airflow runs from its own virtualenv (`make airflow-venv`) with a throw-away
AIRFLOW_HOME (SQLite) and the spark_default connection given as AIRFLOW_CONN_SPARK_DEFAULT.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import requests

from jobs.generate_data import generate
from schemas.settings import PROJECT_ROOT
from schemas.snapshot import read_current_version, verify_snapshot_dir
from tests.jvm import SHORT_LIVED_JVM
from tests.lookup_fixtures import running_gunicorn
from tests.snapshot_records import snapshot_records

pytestmark = [pytest.mark.spark, pytest.mark.e2e]

AIRFLOW = PROJECT_ROOT / ".venv-airflow" / "bin" / "airflow"
AIRFLOW_PYTHON = PROJECT_ROOT / ".venv-airflow" / "bin" / "python"
JOBS_PYTHON = PROJECT_ROOT / ".venv" / "bin" / "python"
LOGICAL_DATE = "2026-10-31"
# The manual run is triggered for this moment; a run for LOGICAL_DATE ends its interval there too.
AS_OF = "2026-10-31T00:00:00+00:00"
# `airflow dags test` always gives its run a logical date. DAG.test(logical_date=None) creates the
# run a trigger without one creates (no logical date, no data interval), in-process as `dags test`.
MANUAL_RUN = r"""
import json, sys
from datetime import datetime
from airflow.utils.cli import get_bagged_dag
run = get_bagged_dag(bundle_names=None, dag_id=sys.argv[1]).test(logical_date=None,
                                                                  run_after=datetime.fromisoformat(sys.argv[2]))
print(json.dumps({"state": str(run.state), "run_type": str(run.run_type),
                  "logical_date": run.logical_date and run.logical_date.isoformat(),
                  "data_interval_end": run.data_interval_end and run.data_interval_end.isoformat()}))
"""
NIGHTLY_TASKS = ["ingest", "als", "ease", "content", "popularity", "hybrid", "ranked", "evaluation",
                 "build_snapshot", "publish"]


class AirflowSandbox:
    """Airflow CLI calls against one temporary AIRFLOW_HOME, data dir and publish target."""

    def __init__(self, root: Path):
        self.root = root
        self.data = root / "data"
        self.serving = root / "serving"
        spark_home = subprocess.run([str(JOBS_PYTHON), "-c", "import os, pyspark; print(os.path.dirname(pyspark.__file__))"],
                                    capture_output=True, text=True, check=True).stdout.strip()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RECSYS", "PYSPARK", "SPARK"))}
        self.env.update({
            "AIRFLOW_HOME": str(root / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "airflow_dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps({"conn_type": "spark", "host": "local[2]"}),
            "SPARK_HOME": spark_home,
            "PATH": f"{spark_home}/bin:{os.environ['PATH']}",
            "SPARK_LOCAL_IP": "127.0.0.1",
            "OPENBLAS_NUM_THREADS": "1",
            **SHORT_LIVED_JVM,
            "RECSYS_DATA_DIR": str(self.data),
            "RECSYS__JOBS__PUBLISH__TARGET": str(self.serving),
        })

    def run(self, *args: str, log_name: str, extra_env: dict[str, str] | None = None,
            timeout: float = 2700, program: Path = AIRFLOW) -> tuple[int, str]:
        """Run ``airflow <args>``; return its exit code and output (also kept in ``<root>/<log_name>``)."""
        log_path = self.root / log_name
        with open(log_path, "w") as log:
            done = subprocess.run([str(program), *args], env={**self.env, **(extra_env or {})}, cwd=self.root,
                                  stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
        return done.returncode, log_path.read_text()


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


@pytest.fixture(scope="module")
def nightly(tmp_path_factory) -> AirflowSandbox:
    """One real manual run of the nightly DAG on generated data, shared by the module."""
    assert AIRFLOW.exists(), f"{AIRFLOW} missing: run `make airflow-venv` (make test does)"
    sandbox = AirflowSandbox(tmp_path_factory.mktemp("airflow-nightly"))
    generate(sandbox.data / "landing", users=200, products=60, events=4000, seed=11, start="2026-10-01", days=30)
    code, out = sandbox.run("db", "migrate", log_name="migrate.log", timeout=300)
    assert code == 0, tail(out)
    code, out = sandbox.run("pools", "set", "recsys_lake", "1", "recsys writers", log_name="pools.log", timeout=120)
    assert code == 0, tail(out)
    code, out = sandbox.run("-c", MANUAL_RUN, "nightly", AS_OF, log_name="nightly-1.log", program=AIRFLOW_PYTHON)
    assert code == 0, tail(out)
    sandbox.first_log = out
    sandbox.first_run = json.loads(out.strip().splitlines()[-1])
    return sandbox


def test_nightly_runs_every_task_and_publishes(nightly):
    """A run with no logical date and no data interval ran every task once, as of the moment it was
    triggered for, and the publish put the build in service."""
    assert nightly.first_run == {"state": "success", "run_type": "manual", "logical_date": None,
                                 "data_interval_end": None}
    for task_id in NIGHTLY_TASKS:
        assert nightly.first_log.count(f"[DAG TEST] starting task_id={task_id} ") == 1, task_id
    assert "RECSYS TASK FAILED" not in nightly.first_log and "will be retried" not in nightly.first_log
    version = read_current_version(nightly.serving)
    assert version and version == read_current_version(nightly.data / "snapshots")
    manifest = verify_snapshot_dir(nightly.serving / version)
    assert manifest.as_of == AS_OF
    for algorithm in ("popular", "als", "ease", "content", "hybrid", "ranked"):
        assert manifest.databases[f"recs/user/{algorithm}"] > 100, algorithm
    policy = json.loads((nightly.data / "evaluation" / "policy.json").read_text())
    assert set(policy["priors"]["all"]) == {"popular", "als", "ease", "content", "hybrid", "ranked"}
    assert sorted(policy["preference"]) == sorted(policy["priors"]["all"])


def test_lookup_server_answers_from_the_published_snapshot(nightly):
    """A real gunicorn pointed at the publish target serves a known user's hybrid list from that version."""
    version = read_current_version(nightly.serving)
    hybrid = snapshot_records(nightly.serving / version)["recs/user/hybrid"]
    user_id = int.from_bytes(min(hybrid), "big")
    with running_gunicorn(nightly.root / "server", extra_env={"RECSYS__SERVER__SNAPSHOT_DIR": str(nightly.serving),
                                                               "RECSYS__SERVER__DELTA__ENABLED": "false"}) as server:
        server.wait_all_workers_on(version)
        answer = requests.get(f"{server.base_url}/v1/users/{user_id}/recommendations",
                              params={"k": 5, "algorithm": "hybrid"}, timeout=5)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["snapshot_version"] == version and body["algorithm"] == "hybrid" and body["fallback"] is None
    assert len(body["items"]) == 5


def test_failed_build_leaves_the_served_snapshot(nightly):
    """A snapshot build that fails (here: its LMDB map is too small) leaves CURRENT, the versions and the
    served snapshot alone, removes its half-built folder, and the callback logs what failed and why."""
    served = read_current_version(nightly.serving)
    built = sorted(p.name for p in (nightly.data / "snapshots").iterdir())
    # `airflow tasks test` runs one try and exits 0 whatever the outcome: the log says what happened.
    code, out = nightly.run("tasks", "test", "nightly", "build_snapshot", LOGICAL_DATE, log_name="failed-build.log",
                            extra_env={"RECSYS__JOBS__SNAPSHOT__MAP_SIZE_GB": "0.0001"})
    assert "recsys task will be retried dag=nightly task=build_snapshot" in out, tail(out)
    assert "MapFullError" in out and "Task failed with exception" in out, tail(out)
    assert read_current_version(nightly.serving) == read_current_version(nightly.data / "snapshots") == served
    assert sorted(p.name for p in (nightly.data / "snapshots").iterdir()) == built  # nothing new, no .building-
    verify_snapshot_dir(nightly.serving / served)
