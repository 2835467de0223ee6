"""`make airflow` as a data engineer runs it: airflow_dags/standalone.sh starts a real local
Airflow (scheduler, DAG processor, triggerer, API server) and a lookup server; a DAG triggered
through scripts/airflow runs; Ctrl-C, or `make airflow-stop` while a task is still running,
leaves no process behind.

The DAGs here are two trivial ones (a task that echoes, one that sleeps), so that the test
measures the start and the stop, not Spark. Every process of a sandbox is found by its
environment: each one inherits the sandbox's AIRFLOW_HOME.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
import requests

from schemas.settings import PROJECT_ROOT, load_conf
from tests.lookup_fixtures import free_port, wait_until

pytestmark = pytest.mark.e2e

STANDALONE = PROJECT_ROOT / "airflow_dags" / "standalone.sh"
AIRFLOW_CLI = PROJECT_ROOT / "scripts" / "airflow"

TRIVIAL_DAGS = '''
from datetime import datetime, timezone
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

start = datetime(2026, 1, 1, tzinfo=timezone.utc)
with DAG("echo", schedule=None, start_date=start, catchup=False):
    BashOperator(task_id="hello", bash_command="echo hello from {{ run_id }}")
with DAG("sleeper", schedule=None, start_date=start, catchup=False):
    BashOperator(task_id="sleep", bash_command="sleep 600")
'''


class LocalAirflow:
    """One `airflow_dags/standalone.sh` with its state, data and DAGs under ``root``, on free ports."""

    def __init__(self, root: Path, **extra_env: str):
        (root / "dags").mkdir(parents=True)
        (root / "dags" / "trivial.py").write_text(textwrap.dedent(TRIVIAL_DAGS))
        # Sample landing files are not needed here: an empty landing folder skips their generation.
        (root / "state" / "data" / "landing" / "events").mkdir(parents=True)
        self.root, self.home = root, root / "state" / "home"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RECSYS", "SPARK_HOME"))}
        self.env.update({
            "RECSYS_AIRFLOW_STATE": str(root / "state"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
            "AIRFLOW_PORT": str(free_port()),
            "PORT": str(free_port()),
            # The scheduler's and triggerer's log servers: free ports too, beside any other Airflow.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            **extra_env,
        })
        self.api = f"http://127.0.0.1:{self.env['AIRFLOW_PORT']}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        """`make airflow` in a terminal of its own (its own process group, as a shell's foreground job)."""
        self.output = open(self.root / "standalone.out", "w")
        self.process = subprocess.Popen([str(STANDALONE)], env=self.env, cwd=PROJECT_ROOT, stdout=self.output,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        wait_until(lambda: "stop:" in self.out() or self.process.poll() is not None, timeout=400, interval=1)
        assert self.process.poll() is None, self.out()

    def out(self) -> str:
        return (self.root / "standalone.out").read_text()

    def cli(self, *args: str) -> str:
        done = subprocess.run([str(AIRFLOW_CLI), *args], env=self.env, cwd=self.root, capture_output=True,
                              text=True, timeout=180)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return done.stdout

    def trigger(self, dag_id: str) -> str:
        """Unpause and trigger ``dag_id`` once the DAG processor has parsed it; the new run's id."""
        wait_until(lambda: dag_id in self.cli("dags", "list", "-o", "plain"), timeout=120, interval=2)
        self.cli("dags", "unpause", dag_id)
        return json.loads(self.cli("dags", "trigger", dag_id, "-o", "json").strip().splitlines()[-1])[0]["dag_run_id"]

    def run_state(self, dag_id: str, run_id: str) -> str:
        runs = json.loads(self.cli("dags", "list-runs", dag_id, "-o", "json").strip().splitlines()[-1])
        return next(run["state"] for run in runs if run["run_id"] == run_id)

    def processes(self) -> dict[int, str]:
        """Every live process of this sandbox (its AIRFLOW_HOME in the environment): pid -> command line."""
        marker = f"AIRFLOW_HOME={self.home}\0".encode()
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if marker in (entry / "environ").read_bytes():
                    found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            except OSError:  # gone meanwhile, or not ours to read
                continue
        return {pid: cmd for pid, cmd in found.items() if cmd}  # zombies have no command line

    def kill_leftovers(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
        for pid in self.processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        self.output.close()


@pytest.fixture
def local_airflow(tmp_path):
    sandboxes = []

    def make(**extra_env: str) -> LocalAirflow:
        sandboxes.append(LocalAirflow(tmp_path / f"airflow-{len(sandboxes)}", **extra_env))
        return sandboxes[-1]
    yield make
    for sandbox in sandboxes:
        sandbox.kill_leftovers()


def executor_workers(airflow: LocalAirflow) -> int:
    """The LocalExecutor's worker processes: children of the scheduler that are not a task runner."""
    scheduler = int((airflow.root / "state" / "run" / "scheduler.pid").read_text())
    children = subprocess.run(["pgrep", "-P", str(scheduler)], capture_output=True, text=True).stdout.split()
    return sum("LocalExecutor" in Path(f"/proc/{pid}/cmdline").read_text() for pid in children
               if Path(f"/proc/{pid}/cmdline").exists())


def test_a_dag_runs_and_ctrl_c_stops_everything(local_airflow):
    """Started as `make airflow` starts it: healthy, a lookup server up, as many executor workers as
    conf/airflow.toml says (0 = the core count, not Airflow's 32); a triggered DAG succeeds;
    Ctrl-C ends the script and every process it started, and removes the pid files."""
    airflow = local_airflow()
    airflow.start()
    assert requests.get(f"{airflow.api}/api/v2/monitor/health", timeout=10).json()["scheduler"]["status"] == "healthy"
    assert requests.get(f"http://127.0.0.1:{airflow.env['PORT']}/healthz", timeout=10).status_code == 200
    workers = load_conf("airflow")["executor_workers"] or os.cpu_count()
    assert executor_workers(airflow) == workers

    run_id = airflow.trigger("echo")
    wait_until(lambda: airflow.run_state("echo", run_id) in ("success", "failed"), timeout=180, interval=2)
    assert airflow.run_state("echo", run_id) == "success"
    assert airflow.processes()

    os.killpg(airflow.process.pid, signal.SIGINT)  # Ctrl-C: the terminal signals its foreground group
    assert airflow.process.wait(timeout=120) == 130, airflow.out()
    assert airflow.processes() == {}
    assert list((airflow.root / "state" / "run").iterdir()) == []
    assert "stopped" in airflow.out().splitlines()[-1]


def test_make_airflow_stop_ends_a_running_task_too(local_airflow):
    """`make airflow-stop` from another shell while a task runs (a 10-minute sleep): the components
    get [stop_timeout_seconds] to finish, then the task and everything else is terminated; nothing
    is left, the foreground script has exited, and the next start finds no stale pid file."""
    airflow = local_airflow(RECSYS__AIRFLOW__STOP_TIMEOUT_SECONDS="3")
    airflow.start()
    run_id = airflow.trigger("sleeper")
    wait_until(lambda: any(cmd == "sleep 600" for cmd in airflow.processes().values()), timeout=180, interval=1)
    assert airflow.run_state("sleeper", run_id) == "running"

    started = time.monotonic()
    done = subprocess.run(["make", "--no-print-directory", "airflow-stop"], env=airflow.env, cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert time.monotonic() - started < 90
    assert airflow.process.wait(timeout=30) is not None
    assert airflow.processes() == {}
    assert "terminating every task and process left" in airflow.out()
    assert list((airflow.root / "state" / "run").iterdir()) == []
