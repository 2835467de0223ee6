"""The multi-machine path on loopback: the jobs on a real Spark standalone cluster
(scripts/cluster: a master and two one-core workers) over an s3a:// lake on a real S3
API (scripts/objectstore), shipped as make dist-jobs builds them and submitted from a
folder outside the checkout: ingest -> popularity -> ALS (both solvers) -> content ->
hybrid -> evaluation -> snapshot -> publish; then two lookup hosts, each a gunicorn and
a sync process with its own folder, serve what was published, and a second build and
publish reaches both. Nothing is shared between driver, executors and hosts but the store."""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pyarrow.parquet as pq
import pytest
import requests

from bench.cluster_overhead.services import free_port_run
from lookup_server.delta import DeltaEvent
from lookup_server.delta.factory import open_delta_store
from schemas.settings import PROJECT_ROOT
from schemas.snapshot import CURRENT_POINTER, verify_snapshot_dir
from schemas.storage import Location
from tests.jvm import SHORT_LIVED_JVM
from tests.lookup_fixtures import running_gunicorn, wait_until
from tests.sync_fixtures import running_sync

pytestmark = pytest.mark.e2e

if shutil.which("java") is None:
    pytest.skip("no java on PATH: a Spark cluster needs it (make system-packages)", allow_module_level=True)
if not list((PROJECT_ROOT / ".jars").glob("delta-spark_*.jar")):
    pytest.skip("no Delta jars in .jars (make jars)", allow_module_level=True)

AS_OF = "2026-10-31T00:00:00Z"
ZIP_TOP_N = 7  # [popularity] top_n in the shipped conf/jobs.toml (the checkout's: 200)
IMPORT_LINE = re.compile(r"^recsys-import (\d+) (\S+) (.+)$", re.MULTILINE)


@dataclass
class Cluster:
    master: str
    ui: str
    folder: Path
    env: dict

    def executor_logs(self, app_id: str) -> list[Path]:
        return sorted(self.folder.glob(f"work/worker-*/{app_id}/*/stderr"))


@dataclass
class Step:
    name: str
    stdout: str
    stderr: str
    seconds: float

    @property
    def result(self) -> dict:
        return json.loads(self.stdout.strip().splitlines()[-1])


def cluster_script(action: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(PROJECT_ROOT / "scripts" / "cluster"), action], env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, object_store):
    """Master and two workers, stopped at the end of the module whatever happened."""
    folder = tmp_path_factory.mktemp("cluster")
    port = free_port_run(4)
    # Every JVM here is short-lived and small (tests/jvm.py): C1 and the serial GC. The
    # executors inherit it from their worker's environment, and the store's credentials
    # (they read and write the lake too).
    env = {**os.environ, "CLUSTER_DIR": str(folder), "CLUSTER_PORT": str(port), **SHORT_LIVED_JVM,
           **object_store.env()}
    try:
        started = cluster_script("start", env)
        assert started.returncode == 0, started.stdout + started.stderr
        yield Cluster(f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}", folder, env)
    finally:
        stopped = cluster_script("stop", env)
        assert stopped.returncode == 0, stopped.stderr
        assert cluster_script("status", env).returncode == 3  # nothing left running


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """make dist-jobs into a folder of the test's, with one setting changed in the zip's
    conf/jobs.toml: lists of that length show the driver read conf from the zip."""
    folder = tmp_path_factory.mktemp("dist")
    subprocess.run(["make", "--no-print-directory", "-s", "dist-jobs", f"DIST={folder}"], cwd=PROJECT_ROOT,
                   check=True, capture_output=True, timeout=60)
    built, shipped = folder / "built.zip", folder / "recsys_jobs.zip"
    shipped.rename(built)
    with zipfile.ZipFile(built) as source, zipfile.ZipFile(shipped, "w", zipfile.ZIP_DEFLATED) as target:
        for entry in source.infolist():
            content = source.read(entry)
            if entry.filename == "conf/jobs.toml":
                content, changed = re.subn(rb"(?m)^(\[popularity\]\s*\n)top_n = \d+", rb"\1top_n = %d" % ZIP_TOP_N,
                                           content)
                assert changed == 1, "conf/jobs.toml's [popularity] no longer starts with top_n"
            target.writestr(entry, content)
    built.unlink()
    return folder


@pytest.fixture(scope="module")
def store(object_store):
    """A bucket of the loopback store, and this process set up as its client for the module."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in object_store.env().items():
            patch.setenv(key, value)
        yield object_store.new_bucket()


@pytest.fixture(scope="module")
def pipeline(cluster, dist, store, tmp_path_factory):
    """Generated data landed in the s3a:// data dir, then every step submitted to the
    cluster from a folder outside the checkout, with nothing of the project on
    PYTHONPATH but the import trace."""
    work = tmp_path_factory.mktemp("work")
    data = Location.of(f"s3a://{store}/recsys")
    subprocess.run([sys.executable, "-m", "jobs.generate_data", "--users", "200", "--products", "60",
                    "--events", "4000", "--seed", "7", "--start", "2026-10-01", "--days", "30",
                    "--out", str(work / "generated")], cwd=PROJECT_ROOT, check=True, capture_output=True, timeout=120)
    (data / "landing").upload_dir(work / "generated")
    trace = work / "trace"
    trace.mkdir()
    shutil.copy(PROJECT_ROOT / "tests" / "cluster_import_trace.py", trace / "sitecustomize.py")
    env = {k: v for k, v in cluster.env.items() if not k.startswith(("RECSYS", "PYTHONPATH", "CLUSTER_"))}
    env.update({k: v for k, v in cluster.env.items() if k.startswith("RECSYS__STORAGE__")})  # the store
    env["PYTHONPATH"] = str(trace)
    env["RECSYS__JOBS__PUBLISH__TARGET"] = f'"s3a://{store}/serving"'
    submit = [str(PROJECT_ROOT / "scripts" / "submit"), "--master", cluster.master,
              "--py-files", str(dist / "recsys_jobs.zip"),
              "--conf", f"spark.executorEnv.PYTHONPATH={trace}",
              # Two cores in all: more partitions are only more tasks to schedule.
              "--conf", "spark.sql.shuffle.partitions=2", "--conf", "spark.default.parallelism=2",
              str(dist / "run_job.py")]
    steps = [("ingest", "jobs.ingest", {}), ("popularity", "jobs.popularity", {}),
             ("als_spark", "jobs.als", {"RECSYS__JOBS__ALS__SOLVER": "spark"}),
             ("als_cg", "jobs.als", {"RECSYS__JOBS__ALS__SOLVER": "cg"}),
             ("content", "jobs.content", {}), ("hybrid", "jobs.hybrid", {}),
             ("evaluation", "jobs.evaluation", {}), ("build_snapshot", "jobs.build_snapshot", {}),
             ("publish", "jobs.publish_snapshot", {})]
    done = {}
    for name, module, extra in steps:
        started = time.monotonic()
        run = subprocess.run([*submit, module, "--data-dir", str(data), "--as-of", AS_OF],
                             cwd=work, env={**env, **extra}, capture_output=True, text=True, timeout=300)
        # spark-submit passes the driver's Python stderr (the job's log) on as its stdout.
        assert run.returncode == 0, f"{name} failed:\n{run.stdout[-4000:]}\n{run.stderr[-2000:]}"
        done[name] = Step(name, run.stdout, run.stderr, time.monotonic() - started)
    print("seconds per step:", {name: round(step.seconds, 1) for name, step in done.items()})
    return data, done, lambda module, *args: subprocess.run(
        [*submit, module, "--data-dir", str(data), "--as-of", AS_OF, *args],
        cwd=work, env=env, capture_output=True, text=True, timeout=300)


def delta_rows(table: Location) -> list[dict]:
    """The rows of a Delta table's current version: its log's live files, read with pyarrow."""
    live: set[str] = set()
    log = table / "_delta_log"
    for commit in (name for name in log.children() if name.endswith(".json")):
        for line in (log / commit).read_text().splitlines():
            action = json.loads(line)
            if "add" in action:
                live.add(unquote(action["add"]["path"]))
            elif "remove" in action:
                live.discard(unquote(action["remove"]["path"]))
    rows = []
    for path in sorted(live):
        fs, where = (table / path).filesystem()
        rows += pq.read_table(where, filesystem=fs).to_pylist()
    return rows


def test_every_step_writes_its_tables(pipeline):
    """Ingest accounts for every event; each algorithm's lists are in the candidates table."""
    data, steps, _ = pipeline
    assert steps["ingest"].result["events"] == {"received": 4000, "accepted": 4000, "rejected": 0}
    assert len(delta_rows(data / "lake" / "events")) == 4000
    assert len(delta_rows(data / "lake" / "user_segments")) > 100
    candidates = delta_rows(data / "lake" / "candidates")
    users = {}
    for row in candidates:
        if row["subject_kind"] == "user":
            users[row["algorithm"]] = users.get(row["algorithm"], 0) + 1
    assert all(users.get(a, 0) > 100 for a in ("popular", "als", "content", "hybrid")), users


def test_both_als_solvers_ran(pipeline):
    """Spark ML's solver and the conjugate-gradient one each wrote user and product lists;
    the table keeps the last run's (cg)."""
    data, steps, _ = pipeline
    spark_run, cg_run = steps["als_spark"].result["result"], steps["als_cg"].result["result"]
    for run in (spark_run, cg_run):
        assert run["lists"]["user"] > 100 and run["lists"]["product"] > 30, run
    assert spark_run["model_version"] != cg_run["model_version"]  # the solver is part of the params
    assert {r["model_version"] for r in delta_rows(data / "lake" / "candidates")
            if r["algorithm"] == "als"} == {cg_run["model_version"]}


def test_evaluation_scored_every_algorithm(pipeline):
    """The offline evaluation retrained and scored every algorithm (EASE and the ranker
    too) and wrote its rows, policy and report."""
    data, steps, _ = pipeline
    policy = steps["evaluation"].result
    assert set(policy["priors"]["all"]) == {"popular", "als", "ease", "content", "hybrid", "ranked"}
    assert json.loads((data / "evaluation" / "policy.json").read_text())["preference"] == policy["preference"]
    assert all(not Path(p).exists() for p in ("s3a:", "s3a:/", PROJECT_ROOT / "s3a:"))  # no URL became a folder
    rows = delta_rows(data / "lake" / "evaluations")
    assert {r["algorithm"] for r in rows} >= {"global_popular", *policy["priors"]["all"]}
    assert len((data / "evaluation" / "report" / "report.html").read_bytes()) > 1000


def test_snapshot_is_built_on_the_store_and_published(pipeline, tmp_path):
    """The snapshot the driver built locally went up to the lake's snapshots folder (CURRENT
    last); publish checked it whole and shipped it to the serving prefix."""
    data, steps, _ = pipeline
    version = steps["build_snapshot"].result["version"]
    assert (data / "snapshots" / CURRENT_POINTER).read_text().strip() == version
    assert steps["publish"].result["version"] == version and steps["publish"].result["copied"] is True
    serving = Location.of(steps["publish"].result["target"])
    (serving / version).download_dir(tmp_path / version)
    manifest = verify_snapshot_dir(tmp_path / version)
    for algorithm in ("popular", "als", "content", "hybrid"):
        assert manifest.databases[f"recs/user/{algorithm}"] > 100, algorithm


def test_two_lookup_hosts_serve_each_publish(object_store, store, redis_server, pipeline, tmp_path):
    """Two hosts, each a gunicorn and a sync with its own folder, one Redis delta: both
    serve the published version, the evaluation's policy with it, both follow a second
    build and publish, and an event written once to the shared delta shows on both."""
    data, steps, submit = pipeline
    first = steps["publish"].result["version"]
    hosts = [tmp_path / "host-a", tmp_path / "host-b"]
    key_prefix = f"cluster:{uuid.uuid4().hex}:"
    delta = {"RECSYS__SERVER__DELTA__REDIS_URL": f'"{redis_server.url}"',
             "RECSYS__SERVER__DELTA__KEY_PREFIX": f'"{key_prefix}"'}
    with contextlib.ExitStack() as stack:
        for host in hosts:
            stack.enter_context(running_sync(object_store, store, host, prefix="serving",
                                             POLL_INTERVAL_SECONDS="0.5"))
        servers = [stack.enter_context(running_gunicorn(host, workers=1, extra_env=delta)) for host in hosts]
        for server, host in zip(servers, hosts):
            wait_until(lambda: served(server.base_url) == first, timeout=30, message=f"{first} on {server.base_url}")
            assert json.loads((host / "evaluation" / "policy.json").read_text())["preference"] == \
                steps["evaluation"].result["preference"]
        for module in ("jobs.build_snapshot", "jobs.publish_snapshot"):
            run = submit(module)
            assert run.returncode == 0, f"{module}:\n{run.stdout[-3000:]}\n{run.stderr[-2000:]}"
        second = json.loads(run.stdout.strip().splitlines()[-1])["version"]
        assert second != first
        for server in servers:
            wait_until(lambda: served(server.base_url) == second, timeout=30, message=f"{second} on {server.base_url}")
            body = requests.get(f"{server.base_url}/v1/users/1/recommendations?k=3", timeout=5).json()
            assert body["snapshot_version"] == second and len(body["items"]) == 3
        # A new visitor's view, as a collector writes it, once: both hosts answer from it.
        shared = open_delta_store({"redis_url": redis_server.url, "key_prefix": key_prefix}, tmp_path)
        shared.add_events([DeltaEvent(987_000_001, body["items"][0]["product_id"], "view", time.time())])
        for server in servers:
            visitor = requests.get(f"{server.base_url}/v1/users/987000001/recommendations?k=3", timeout=5).json()
            assert visitor["realtime"]["recent_events"] == 1, (server.base_url, visitor)


def served(base_url: str) -> str | None:
    """The snapshot version a lookup host answers from (None until it is ready)."""
    try:
        response = requests.get(f"{base_url}/readyz", timeout=2)
    except requests.ConnectionError:
        return None
    return response.json().get("snapshot_version") if response.status_code == 200 else None


def test_work_ran_on_the_cluster_executors(cluster, pipeline):
    """Every step was an application of this master, not a local session, and its tasks
    ran in executors under both workers."""
    _, steps, _ = pipeline
    spark_steps = [step for name, step in steps.items() if name != "publish"]  # publishing needs no Spark
    for step in spark_steps:
        assert f"on {cluster.master}" in step.stdout + step.stderr, step.name  # jobs.spark_session's line
    apps = requests.get(f"{cluster.ui}/json/", timeout=5).json()["completedapps"]
    assert len(apps) >= len(spark_steps) and all(app["state"] == "FINISHED" for app in apps), apps
    workers_with_tasks = set()
    for app in apps:
        logs = [log for log in cluster.executor_logs(app["id"]) if "Finished task" in log.read_text()]
        assert logs, f"{app['name']}: no executor ran a task"
        workers_with_tasks |= {log.parents[2].name for log in logs}
    assert workers_with_tasks == {"worker-1", "worker-2"}


def test_code_came_from_the_zip_only(cluster, dist, pipeline):
    """Driver and executors imported every jobs and schemas module from the shipped zip
    (each executor's copy of it), none from the checkout; conf came from the zip too."""
    data, steps, _ = pipeline
    driver = [m for step in steps.values() for m in IMPORT_LINE.findall(step.stdout + step.stderr)]
    # An executor's Python workers run in its folder, where it fetched the zip: the
    # origins are relative to it (./recsys_jobs.zip/jobs/...).
    executors = [(pid, name, str((log.parent / origin).resolve()))
                 for log in cluster.folder.glob("work/worker-*/app-*/*/stderr")
                 for pid, name, origin in IMPORT_LINE.findall(log.read_text())]
    assert {m[1] for m in driver} >= {"jobs.popularity", "jobs.build_snapshot", "schemas.settings"}
    assert {m[1] for m in executors} >= {"jobs", "jobs.als_cg"}, "executors imported no job code"
    zip_path = str(dist / "recsys_jobs.zip")
    assert all(origin.startswith(f"{zip_path}/") for _, _, origin in driver), driver
    shipped_copy = re.compile(re.escape(str(cluster.folder.resolve())) + r"/work/worker-\d/app-[^/]+/\d+/recsys_jobs\.zip/")
    assert all(shipped_copy.match(origin) for _, _, origin in executors), executors
    popular = [r for r in delta_rows(data / "lake" / "candidates") if r["algorithm"] == "popular"]
    assert [len(r["product_ids"]) for r in popular if r["subject_kind"] == "global"] == [ZIP_TOP_N]
    assert max(len(r["product_ids"]) for r in popular if r["subject_kind"] == "category") <= ZIP_TOP_N
