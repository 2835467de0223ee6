"""Faults in the batch side (issue 7, items 5-7): a Spark job killed while it writes, a
full disk under the snapshot builder, a collector killed between receiving a batch and
acknowledging it.

Kills are real: ``python -m jobs.ingest`` and ``python -m jobs.build_snapshot`` run as
subprocesses in a process group of their own, so that one SIGKILL takes their JVM too,
once the filesystem shows them mid-write (data files in the table folder without their
Delta commit, the snapshot's hidden ``.building-*`` folder). Nothing in the product
waits for the test: the ingest writes a file per day partition, which takes seconds,
and the builder gets a tiny ``read_budget_mb`` (a documented setting) so that it reads
its lists in many key ranges. A job subprocess costs a JVM (about a minute of CPU), so
the faults that need no kill from outside run in the shared session: a crash between
the ingest's commit and its bookkeeping is an exception there, and the full disk fails
the build by itself.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import requests
from pyspark.sql import functions as F

from jobs.build_snapshot import build_snapshot
from jobs.build_snapshot import main as build_snapshot_main
from jobs.candidates import replace_algorithm_candidates
from jobs.cli import parse_as_of
from jobs.delta_tables import ensure_table
from jobs.generate_data import generate
from jobs.ingest import TableIngest, run_ingest
from jobs.paths import DataPaths
from jobs.snapshot_writer import SnapshotWriteError
from schemas import CANDIDATES, EVENTS, PRODUCTS_STORED, spark_schema
from schemas.settings import PROJECT_ROOT, load_conf
from schemas.snapshot import read_current_version, verify_snapshot_dir
from tests.collector_fixtures import AUTH, hidden_files, landed, running_collector
from tests.jvm import SHORT_LIVED_JVM
from tests.lookup_fixtures import child_env, wait_until
from tests.snapshot_records import snapshot_records

pytestmark = [pytest.mark.spark, pytest.mark.faults]

AS_OF_TEXT = "2026-10-31T00:00:00Z"
AS_OF = parse_as_of(AS_OF_TEXT)
# The settings the subprocess jobs read (conf/jobs.toml without overrides), for the re-runs.
JOBS_CONF = load_conf("jobs", environ={})
SNAPSHOT_SETTINGS = {**JOBS_CONF["snapshot"], "map_size_gb": 0.0625}
SLOW_READ = {"RECSYS__JOBS__SNAPSHOT__READ_BUDGET_MB": "0.001"}  # many key ranges: a build of seconds
JOB_TIMEOUT = 600


# --- jobs as subprocesses -----------------------------------------------------------

@contextlib.contextmanager
def running_job(module: str, data_dir: Path, *args: str, env: dict[str, str] | None = None):
    """``python -m <module>`` on ``data_dir`` at AS_OF, importing this checkout's code,
    in its own process group; output in ``data_dir/<module>.log``. Whatever is left of
    the group (the JVM outlives a killed driver for a moment) is killed at the end."""
    log_path = data_dir / f"{module}.log"
    settings = {"PYTHONPATH": str(PROJECT_ROOT), "SPARK_LOCAL_IP": "127.0.0.1",
                "RECSYS__SPARK__MASTER": "local[2]",  # as the tests' session: small and quick
                "RECSYS__SPARK__CONF__spark.sql.shuffle.partitions": "2", **SHORT_LIVED_JVM}
    command = [sys.executable, "-m", module, "--data-dir", str(data_dir), "--as-of", AS_OF_TEXT, *args]
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=child_env("RECSYS__", settings, env),
                                   stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    process.log_path = log_path
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def job_log(process: subprocess.Popen) -> str:
    return process.log_path.read_text(errors="replace")


def kill_when(process: subprocess.Popen, mid_write: Callable[[], object], what: str) -> None:
    """Poll ``mid_write`` every millisecond; once it holds, SIGKILL the job's process group."""
    deadline = time.monotonic() + JOB_TIMEOUT
    while not mid_write():
        if process.poll() is not None:
            pytest.fail(f"the job ended ({process.returncode}) before {what}:\n{job_log(process)[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {JOB_TIMEOUT}s:\n{job_log(process)[-3000:]}")
        time.sleep(0.001)
    os.killpg(process.pid, signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL


# --- Delta tables, read from the filesystem (cheap enough to poll) ---------------------

_COMMIT = re.compile(r"[0-9]{20}\.json")


def committed_version(table: Path) -> int:
    """The newest commit in ``table``'s _delta_log, -1 if none."""
    log_dir = table / "_delta_log"
    names = os.listdir(log_dir) if log_dir.is_dir() else []
    return max((int(name[:20]) for name in names if _COMMIT.fullmatch(name)), default=-1)


def data_files(table: Path) -> set[Path]:
    """Parquet files in ``table``'s folder, whether a commit names them or not."""
    return {p for p in table.rglob("*.parquet") if "_delta_log" not in p.parts}


# --- 5. ingest killed mid-write --------------------------------------------------------

@pytest.fixture(scope="module")
def events_lake(spark, tmp_path_factory) -> DataPaths:
    """A lake whose events table holds 600 generated events (from landing/events)."""
    paths = DataPaths(tmp_path_factory.mktemp("events-lake"))
    land_generated_events(paths, "first", events=600, seed=7, start="2026-10-01")
    run_ingest(spark, paths, AS_OF, JOBS_CONF["ingest"], tables=["events"])
    return paths


def land_generated_events(paths: DataPaths, name: str, events: int, seed: int, start: str) -> None:
    """``events`` generated events over 15 days from ``start``, landed as ``<name>-*.jsonl``."""
    staging = paths.root.local_path / "generated" / name
    generate(staging, users=300, products=80, events=events, seed=seed, start=start, days=15)
    landing = paths.landing_for("events").local_path
    landing.mkdir(parents=True, exist_ok=True)
    for path in (staging / "events").glob("*.jsonl"):
        shutil.copy(path, landing / f"{name}-{path.name}")


def landed_event_keys(folder: Path) -> list[tuple]:
    """The dedupe key (EVENTS.key) of every event line in ``folder``, timestamps as epoch seconds."""
    keys = []
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            moment = datetime.fromisoformat(row["timestamp"].replace("Z", "+00:00"))
            keys.append((row["user_id"], row["event_type"], row["product_id"], int(moment.timestamp())))
    return keys


def stored_event_keys(spark, paths: DataPaths) -> list[tuple]:
    events = spark.read.format("delta").load(paths.table("events"))
    keys = events.select(*EVENTS.key[:3], F.unix_timestamp("timestamp").alias("timestamp")).collect()
    return sorted(tuple(r) for r in keys)


def assert_each_landed_event_once(spark, paths: DataPaths) -> None:
    """What a clean run gives: every distinct landed event stored once, and the
    ingest log counts every landed line once (received = accepted + rejected)."""
    landed_keys = landed_event_keys(paths.landing_for("events").local_path)
    assert stored_event_keys(spark, paths) == sorted(set(landed_keys))
    logged = (spark.read.format("delta").load(paths.table("ingest_log"))
              .where(F.col("stream_id") == "ingest-events-json")
              .agg(F.sum("received"), F.sum("accepted"), F.sum("rejected")).first())
    assert tuple(logged) == (len(landed_keys), len(set(landed_keys)), len(landed_keys) - len(set(landed_keys)))


def test_ingest_killed_while_writing_leaves_the_table_and_the_rerun_stores_each_event_once(spark, events_lake):
    """SIGKILL once the events table has new Parquet files but no new commit: the table
    keeps its version and rows (the files are orphans no commit names); the re-run
    stores each event once, as a clean run does."""
    paths = events_lake
    land_generated_events(paths, "killed-mid-write", events=3000, seed=8, start="2026-10-16")
    table = Path(paths.table("events"))
    version, files, rows = committed_version(table), data_files(table), stored_event_keys(spark, paths)

    with running_job("jobs.ingest", paths.root.local_path, "--tables", "events") as job:
        kill_when(job, lambda: data_files(table) - files and committed_version(table) == version,
                  "new Parquet files in the events table without a commit")

    assert committed_version(table) == version
    assert data_files(table) - files, "the killed job's files should be there, unreferenced"
    assert stored_event_keys(spark, paths) == rows

    run_ingest(spark, paths, AS_OF, JOBS_CONF["ingest"], tables=["events"])
    assert committed_version(table) == version + 1
    assert_each_landed_event_once(spark, paths)


class CrashBeforeBookkeeping(Exception):
    """Stands for a kill between the batch's Delta commits and its ingest_log row."""


def test_ingest_crashed_between_commit_and_log_reruns_without_adding_twice(spark, events_lake, monkeypatch):
    """A crash after the events commit, before the batch is logged and checkpointed
    (here an exception in place of the ingest_log write, in the shared session: the
    state left is the same as a kill's): the re-run replays the batch, and Delta skips
    its append (same transaction id), so the table gains no commit and no row twice."""
    paths = events_lake
    land_generated_events(paths, "crashed-after-commit", events=600, seed=9, start="2026-10-16")
    table, log_table = Path(paths.table("events")), Path(paths.table("ingest_log"))
    version, logged = committed_version(table), committed_version(log_table)

    def crash(*_args):
        raise CrashBeforeBookkeeping("killed before the batch was logged")

    monkeypatch.setattr(TableIngest, "_log_batch", crash)
    with pytest.raises(Exception, match="killed before the batch was logged"):
        run_ingest(spark, paths, AS_OF, JOBS_CONF["ingest"], tables=["events"])
    monkeypatch.undo()
    assert committed_version(table) == version + 1 and committed_version(log_table) == logged

    run_ingest(spark, paths, AS_OF, JOBS_CONF["ingest"], tables=["events"])
    assert committed_version(table) == version + 1, "the replayed batch must not be appended again"
    assert_each_landed_event_once(spark, paths)


# --- 5. snapshot build killed mid-write -----------------------------------------------

@pytest.fixture(scope="module")
def snapshot_lake(spark, tmp_path_factory) -> DataPaths:
    """What the snapshot builder reads: 200 products in five categories, and the popular
    lists of 400 users (50 products each), of the five categories and a global one."""
    paths = DataPaths(tmp_path_factory.mktemp("snapshot-lake"))
    products = [(p, f"dept.c{p % 5}", 1.0 + p, True, None, None, AS_OF) for p in range(200)]
    ensure_table(spark, paths.table("products"), PRODUCTS_STORED)
    (spark.createDataFrame(products, spark_schema(PRODUCTS_STORED))
     .write.format("delta").mode("append").save(paths.table("products")))
    rng = np.random.default_rng(7)
    scores = [float(50 - rank) for rank in range(50)]
    lists = [(kind, subject, "popular", rng.choice(200, 50, replace=False).tolist(), scores, "popular-v1")
             for kind, subject in [("user", str(u)) for u in range(400)]
             + [("category", f"dept.c{c}") for c in range(5)] + [("global", "all")]]
    replace_algorithm_candidates(spark, paths.table("candidates"), "popular",
                                 spark.createDataFrame(lists, spark_schema(CANDIDATES)))
    return paths


def reading(snapshot_lake: DataPaths, data_dir: Path) -> DataPaths:
    """A data folder of its own whose lake is ``snapshot_lake``'s (the builder only reads it)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "lake").symlink_to(snapshot_lake.lake.local_path)
    return DataPaths(data_dir)


def test_snapshot_build_killed_mid_write_leaves_current_and_the_rerun_publishes_the_same_records(
        spark, snapshot_lake, tmp_path):
    """SIGKILL while ``.building-v2`` exists: CURRENT still names v1, which verifies; the
    re-run clears the leftover and publishes v2 with exactly v1's records."""
    paths = reading(snapshot_lake, tmp_path / "data")
    root = paths.snapshots.local_path
    served = build_snapshot(spark, paths, AS_OF, SNAPSHOT_SETTINGS, version="v1")

    with running_job("jobs.build_snapshot", paths.root.local_path, "--version", "v2", env=SLOW_READ) as job:
        # A folder for v2, hidden or not: a builder writing in place must be caught too.
        kill_when(job, lambda: (root / ".building-v2").is_dir() or (root / "v2").is_dir(), "a folder for v2")

    assert read_current_version(root) == "v1"
    assert verify_snapshot_dir(root / "v1") == served
    assert (root / ".building-v2").is_dir() and not (root / "v2").exists()

    rebuilt = build_snapshot(spark, paths, AS_OF, SNAPSHOT_SETTINGS, version="v2")
    assert sorted(p.name for p in root.iterdir()) == ["CURRENT", "v1", "v2"]
    assert read_current_version(root) == "v2" and verify_snapshot_dir(root / "v2") == rebuilt
    assert rebuilt.databases == served.databases
    assert snapshot_records(root / "v2") == snapshot_records(root / "v1")


# --- 6. the disk fills during a snapshot build ---------------------------------------

class SmallDisk:
    """A folder on a filesystem of its own (tmpfs), shrunk to leave little room so that
    a build writing there fills it. Where mounting is not allowed, RLIMIT_FSIZE on this
    process stands in while the build runs: LMDB's write then stops at the limit
    (EFBIG) instead of at a full disk (ENOSPC). CPython ignores SIGXFSZ from start-up,
    so the write fails instead of the process being killed."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True)
        self.mode = os.environ.get("FAULTS_SMALL_DISK", "tmpfs")  # "rlimit" tries the fallback here
        if self.mode == "tmpfs" and not self._run("mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs"):
            self.mode = "rlimit"
        self.room_bytes: int | None = None

    def _run(self, *command: str) -> bool:
        return subprocess.run([*command, str(self.folder)], capture_output=True).returncode == 0

    def leave_room(self, room_bytes: int) -> None:
        """From now on, only about ``room_bytes`` more fit (tmpfs rounds to pages)."""
        self.room_bytes = room_bytes
        if self.mode == "tmpfs":
            usage = shutil.disk_usage(self.folder)
            assert self._run("mount", "-o", f"remount,size={usage.total - usage.free + room_bytes}", "tmpfs")

    @contextlib.contextmanager
    def filling(self):
        """The block runs with the room left (the file size limit, in the fallback)."""
        if self.mode == "tmpfs":
            yield
            return
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.room_bytes, hard))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))

    def close(self) -> None:
        if self.mode == "tmpfs" and not self._run("umount"):
            self._run("umount", "-l")  # still busy: detach it now, free it when released


@pytest.fixture
def small_disk(tmp_path):
    disk = SmallDisk(tmp_path / "data" / "snapshots")
    yield disk
    disk.close()


def test_snapshot_build_on_a_full_disk_fails_cleanly_and_leaves_the_served_snapshot(
        spark, snapshot_lake, small_disk):
    """The snapshots folder has room for half a snapshot more: the job fails with an
    error naming the snapshot and the space left, removes its hidden folder, and
    CURRENT still names v1, which verifies.

    The job's own ``main()`` runs here, in the shared session (no kill is needed, and
    a subprocess costs a JVM): its exception is what makes ``python -m
    jobs.build_snapshot`` exit 1. The disk is a tmpfs mounted for the test (the suite
    runs as root, as CI does); without mount rights RLIMIT_FSIZE stands in (see
    SmallDisk) and the error names the file size limit."""
    paths = reading(snapshot_lake, small_disk.folder.parent)
    served = build_snapshot(spark, paths, AS_OF, SNAPSHOT_SETTINGS, version="v1")
    small_disk.leave_room(served.files["data.mdb"]["bytes"] // 2)

    with small_disk.filling(), pytest.raises(SnapshotWriteError) as failure:
        build_snapshot_main(["--data-dir", str(paths.root), "--as-of", AS_OF_TEXT, "--version", "v2"])
    message = str(failure.value)
    assert message.startswith(f"snapshot v2: LMDB commit in {paths.snapshots / '.building-v2'} failed"), message
    assert "MB free of" in message and (small_disk.mode == "tmpfs" or "ulimit -f" in message), message

    root = paths.snapshots.local_path
    assert sorted(p.name for p in root.iterdir()) == ["CURRENT", "v1"]
    assert read_current_version(root) == "v1" and verify_snapshot_dir(root / "v1") == served


# --- 7. the collector killed between receiving and acknowledging ----------------------

# Recent enough for the collector's real-time store, which drops old events.
COLLECTOR_T0 = (datetime.now(timezone.utc) - timedelta(hours=1)).replace(microsecond=0).isoformat()
BATCH_SIZE = 5


class EventSender:
    """Sends numbered batches of distinct events from a few threads and records
    which ones the collector acknowledged (202 with every event accepted)."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.batches: dict[int, list[dict]] = {}
        self.acknowledged: set[int] = set()
        self.sent_at: dict[int, float] = {}  # first attempt
        self._next = 0
        self._lock = threading.Lock()

    def new_batch(self) -> int:
        with self._lock:
            number = self._next
            self._next += 1
        # user = batch number, product = position: the dedupe key differs for every event
        self.batches[number] = [{"user_id": number, "event_type": "view", "product_id": i,
                                 "timestamp": COLLECTOR_T0} for i in range(BATCH_SIZE)]
        return number

    def send(self, number: int) -> bool:
        self.sent_at.setdefault(number, time.monotonic())
        try:
            response = requests.post(f"{self.base_url}/v1/events", json={"events": self.batches[number]},
                                     headers=AUTH, timeout=10)
        except requests.RequestException:  # reset, refused, timed out: not acknowledged
            return False
        ok = response.status_code == 202 and response.json()["accepted"] == BATCH_SIZE
        if ok:
            with self._lock:
                self.acknowledged.add(number)
        return ok

    def send_until(self, stop: threading.Event, threads: int = 6) -> ThreadPoolExecutor:
        def keep_sending():
            while not stop.is_set():
                self.send(self.new_batch())

        pool = ThreadPoolExecutor(max_workers=threads)
        for _ in range(threads):
            pool.submit(keep_sending)
        return pool


def test_collector_killed_mid_stream_loses_no_acknowledged_event_and_ingest_stores_each_once(
        spark, tmp_path):
    """Batches stream in from six threads; the master and both workers are SIGKILLed
    together, requests in flight. After a restart the client resends what was not
    acknowledged, and some acknowledged batches as if their answer had been lost.
    Then: every acknowledged event is in the events table, none twice, and the ingest
    counted every landed line (received = accepted + rejected)."""
    stop = threading.Event()
    with running_collector(tmp_path, workers=2) as server:
        sender = EventSender(server.base_url)
        pool = sender.send_until(stop)
        wait_until(lambda: len(sender.acknowledged) >= 40, timeout=60, message="40 acknowledged batches")
        workers = server.worker_pids()
        killed_at = time.monotonic()
        server.process.kill()
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        stop.set()
        pool.shutdown(wait=True)
        server.process.wait(timeout=10)
    acknowledged_at_crash = set(sender.acknowledged)
    unanswered = sorted(set(sender.batches) - acknowledged_at_crash)
    assert any(sender.sent_at[n] < killed_at for n in unanswered), "the kill should catch requests in flight"
    assert hidden_files(tmp_path, "events"), "the killed workers' files should be left unpublished"

    with running_collector(tmp_path, workers=2) as server:
        assert hidden_files(tmp_path, "events") == []  # published by the master before any worker
        sender.base_url = server.base_url
        answer_lost = sorted(acknowledged_at_crash)[-3:]
        with ThreadPoolExecutor(max_workers=6) as pool:
            resent = list(pool.map(sender.send, unanswered + answer_lost))
        assert all(resent)
    assert server.process.returncode == 0, server.log_text()

    paths = DataPaths(tmp_path)
    lines = landed(tmp_path, "events", include_hidden=False)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    counts = run_ingest(spark, paths, now, JOBS_CONF["ingest"], tables=["events"])["events"]
    assert counts.received == len(lines) == counts.accepted + counts.rejected

    stored = spark.read.format("delta").load(paths.table("events"))
    keys = [(r.user_id, r.product_id) for r in stored.select("user_id", "product_id").collect()]
    assert len(keys) == len(set(keys)), "an event stored twice"
    acknowledged = {(number, i) for number in sender.acknowledged for i in range(BATCH_SIZE)}
    assert acknowledged <= set(keys), f"{len(acknowledged - set(keys))} acknowledged events missing"
    assert set(sender.acknowledged) == set(sender.batches)  # in the end, every batch
    assert set(keys) == acknowledged  # and nothing that was never sent
    reasons = {r.reason for r in spark.read.format("delta").load(paths.table("events_rejected")).collect()}
    assert reasons <= {"duplicate event (repeated in this batch)"}
    assert counts.rejected >= len(answer_lost) * BATCH_SIZE
