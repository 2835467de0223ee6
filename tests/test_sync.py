"""``python -m lookup_server.sync``: snapshot pulls from a real (loopback) S3 store onto
lookup hosts, with its faults: truncated and corrupt objects, a missing version, a
hung or restarted store, a pull killed mid-download; and two real gunicorn hosts
following one store."""
from __future__ import annotations

import ast
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
import requests
from botocore.config import Config

from lookup_server.config import SyncConfig
from lookup_server.sync import FAILURE_REASONS, INCOMING_PREFIX, SyncLoop, main, parse_source
from schemas.settings import PROJECT_ROOT
from schemas.snapshot import (
    CURRENT_POINTER, DATA_FILE, MANIFEST_FILE, Manifest, file_digest, read_current_version, verify_snapshot_dir,
)
from tests.lookup_fixtures import (
    SnapshotContent, build_snapshot, child_env, running_gunicorn, wait_until,
)
from tests.objectstore_fixtures import CREDENTIALS
from tests.sync_fixtures import (
    POLL_SECONDS, PREFIX, run_once, running_sync, wait_current,
)



# --- the store side: publishing as jobs.publish_snapshot does ------------------------

class Publisher:
    """Writes one bucket as the publish job writes an object store: a version's data
    files, its manifest, then the CURRENT object. Snapshots are built with the real
    writer (tests/lookup_fixtures.build_snapshot) in ``built``."""

    def __init__(self, object_store, bucket: str, built: Path):
        self.store = object_store
        self.bucket = bucket
        self.built = built
        self.client = boto3.client(
            "s3", endpoint_url=object_store.endpoint, region_name="us-east-1",
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}))

    def build(self, version: str, content: SnapshotContent | None = None) -> Path:
        return build_snapshot(self.built, version, content)

    def upload(self, path: Path, data: bytes | None = None) -> None:
        """The version's files, the manifest last; ``data`` replaces data.mdb's bytes."""
        for name in (DATA_FILE, MANIFEST_FILE):
            body = data if data is not None and name == DATA_FILE else (path / name).read_bytes()
            self.client.put_object(Bucket=self.bucket, Key=f"{PREFIX}/{path.name}/{name}", Body=body)

    def upload_file(self, path: Path) -> None:
        """Like ``upload``, streaming data.mdb from disk (big files)."""
        with open(path / DATA_FILE, "rb") as fh:
            self.client.put_object(Bucket=self.bucket, Key=f"{PREFIX}/{path.name}/{DATA_FILE}", Body=fh)
        self.client.put_object(Bucket=self.bucket, Key=f"{PREFIX}/{path.name}/{MANIFEST_FILE}",
                               Body=(path / MANIFEST_FILE).read_bytes())

    def point_current_at(self, version: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=f"{PREFIX}/{CURRENT_POINTER}", Body=f"{version}\n".encode())

    def publish(self, version: str, content: SnapshotContent | None = None) -> Path:
        path = self.build(version, content)
        self.upload(path)
        self.point_current_at(version)
        return path

    def recreate_bucket(self) -> None:
        """After a restart of the store (which comes back empty)."""
        self.client.create_bucket(Bucket=self.bucket)


@pytest.fixture
def publisher(object_store, tmp_path):
    return Publisher(object_store, object_store.new_bucket(), tmp_path / "built")


def local_versions(root: Path) -> set[str]:
    return {p.name for p in root.iterdir() if p.is_dir()} if root.is_dir() else set()


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.glob(f"{INCOMING_PREFIX}*"))


# --- happy path ------------------------------------------------------------------------

def test_once_then_polling_follows_publishes(object_store, publisher, tmp_path):
    """--once gets v1 verified; the loop then answers 304s, follows v2..v4, keeps the newest 2."""
    data_dir, root = tmp_path / "host", tmp_path / "host" / "snapshots"
    assert run_once(object_store, publisher.bucket, data_dir).returncode == 1  # nothing published yet

    publisher.publish("v1")
    once = run_once(object_store, publisher.bucket, data_dir)
    assert once.returncode == 0, once.stderr
    assert read_current_version(root) == "v1"
    assert verify_snapshot_dir(root / "v1").version == "v1"
    assert "now serving v1 (was nothing)" in once.stderr
    again = run_once(object_store, publisher.bucket, data_dir)
    assert again.returncode == 0 and "up to date: v1" in again.stderr  # no second download

    sizes = {}
    with running_sync(object_store, publisher.bucket, data_dir) as sync:
        wait_until(lambda: (sync.metric("recsys_sync_polls_total", outcome="not_modified") or 0) >= 3,
                   message="304s while nothing changes")
        assert sync.metric("recsys_sync_polls_total", outcome="up_to_date") == 1  # the first GET: no ETag yet
        assert sync.metric("recsys_sync_downloaded_bytes_total") == 0
        assert sync.metric("recsys_sync_snapshot_info", version="v1") == 1

        for version in ("v2", "v3", "v4"):
            sizes[version] = (publisher.publish(version) / DATA_FILE).stat().st_size
            wait_current(root, version, sync)
            assert verify_snapshot_dir(root / version).version == version
        # keep_versions = 2, pruned once the new CURRENT is in place
        wait_until(lambda: local_versions(root) == {"v3", "v4"}, message="v1 and v2 pruned")
        assert leftovers(root) == []
        not_modified = sync.metric("recsys_sync_polls_total", outcome="not_modified")
        wait_until(lambda: sync.metric("recsys_sync_polls_total", outcome="not_modified") > not_modified,
                   message="304s again after v4")
        metrics = sync.metrics()
        assert metrics[("recsys_sync_polls_total", (("outcome", "switched"),))] == 3
        assert metrics[("recsys_sync_downloaded_bytes_total", ())] == sum(sizes.values())
        assert metrics[("recsys_sync_snapshot_info", (("version", "v4"),))] == 1
        assert ("recsys_sync_snapshot_info", (("version", "v1"),)) not in metrics
        assert time.time() - metrics[("recsys_sync_last_success_timestamp_seconds", ())] < 10
        assert all(metrics[("recsys_sync_failures_total", (("reason", r),))] == 0 for r in FAILURE_REASONS)
        assert metrics[("recsys_sync_pull_duration_seconds_count", (("outcome", "switched"),))] == 3
    assert sync.process.returncode == 0
    log = sync.log_text()
    assert "now serving v4 (was v3)" in log and "removed v2" in log and "stopped; serving v4" in log


def test_pulls_what_the_publish_job_uploads(object_store_env, tmp_path):
    """The contract with jobs.publish_snapshot: what its ObjectStoreTarget uploads, --once serves."""
    from jobs.publish_snapshot import open_target, publish_snapshot
    from schemas.storage import Location
    from tests.lookup_fixtures import publish_snapshot as build_and_publish_locally

    bucket, built = object_store_env.new_bucket(), tmp_path / "built"
    target = open_target(f"s3://{bucket}/{PREFIX}", Location.of(tmp_path))
    for version in ("v1", "v2"):
        # v2 carries the evaluation's verdict: the host's server follows it from policy_file.
        policy = {"preference": ["popular"], "priors": {"all": {"popular": 0.3}}} if version == "v2" else None
        build_and_publish_locally(built, version, SnapshotContent(policy=policy))
        assert publish_snapshot(built, target)["version"] == version
        once = run_once(object_store_env, bucket, tmp_path / "host")
        assert once.returncode == 0, once.stderr
        assert read_current_version(tmp_path / "host" / "snapshots") == version
        installed = tmp_path / "host" / "evaluation" / "policy.json"
        assert json.loads(installed.read_text()) == policy if policy else not installed.exists()
    assert verify_snapshot_dir(tmp_path / "host" / "snapshots" / "v2").files == verify_snapshot_dir(built / "v2").files


# --- faults -------------------------------------------------------------------------------

def _truncated(publisher: Publisher, path: Path) -> None:
    publisher.upload(path, data=(path / DATA_FILE).read_bytes()[:4096])
    publisher.point_current_at(path.name)


def _wrong_checksum(publisher: Publisher, path: Path) -> None:
    data = bytearray((path / DATA_FILE).read_bytes())
    data[-1] ^= 0xFF
    publisher.upload(path, data=bytes(data))
    publisher.point_current_at(path.name)


def _missing_version(publisher: Publisher, path: Path) -> None:
    publisher.point_current_at(path.name)  # no files: a publisher that wrote CURRENT first


FAULTS = {  # damage to v2 in the store, the reason counted, what the log line says
    "truncated object": (_truncated, "truncated", "the manifest says"),
    "wrong checksum": (_wrong_checksum, "checksum", "checksum mismatch"),
    "missing version": (_missing_version, "missing_version", "manifest.json: no such object"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_broken_publish_keeps_previous_version(object_store, publisher, tmp_path, fault):
    """A broken v2 is refused (counted, logged, retried with back-off), v1 stays; a fixed v2 is picked up."""
    damage, reason, says = FAULTS[fault]
    data_dir, root = tmp_path / "host", tmp_path / "host" / "snapshots"
    publisher.publish("v1")
    with running_sync(object_store, publisher.bucket, data_dir) as sync:
        wait_current(root, "v1", sync)
        v2 = publisher.build("v2", SnapshotContent(global_popular=[(21, 2.0)]))
        damage(publisher, v2)
        sync.wait_failures(reason, at_least=3)

        assert read_current_version(root) == "v1"
        assert local_versions(root) == {"v1"} and leftovers(root) == []  # nothing partial exposed
        verify_snapshot_dir(root / "v1")
        assert sync.metric("recsys_sync_snapshot_info", version="v1") == 1
        failed = [line for line in sync.log_text().splitlines() if f"pull failed ({reason})" in line]
        assert failed and says in failed[0] and "still serving v1" in failed[0], sync.log_text()
        # Exponential back-off: 0.2 s, then 0.4 s (capped at 1.0, see test_retry_delay_doubles_up_to_the_cap).
        assert "retry in 0.2 s" in failed[0] and "retry in 0.4 s" in failed[1]

        publisher.upload(v2)  # the publisher retries; CURRENT already names v2
        publisher.point_current_at("v2")
        wait_current(root, "v2", sync)
        verify_snapshot_dir(root / "v2")
        wait_until(lambda: sync.metric("recsys_sync_consecutive_failures") == 0, message="the good pull counted")
    assert "now serving v2 (was v1)" in sync.log_text()


@pytest.mark.e2e
def test_store_down_host_keeps_serving_then_catches_up(object_store, publisher, tmp_path):
    """A hung store, then a stopped one that restarts empty: the host serves v1 throughout, then catches up."""
    data_dir, root = tmp_path / "host", tmp_path / "host" / "snapshots"
    publisher.publish("v1")
    with running_gunicorn(data_dir, workers=1) as server, \
            running_sync(object_store, publisher.bucket, data_dir) as sync:
        wait_until(lambda: _served(server.base_url) == "v1", message="v1 served")
        try:
            object_store.pause()  # SIGSTOP: connections hang until the read timeout
            sync.wait_failures("unreachable")
            assert _served(server.base_url) == "v1"
            assert requests.get(f"{server.base_url}/v1/users/1/recommendations", timeout=5).status_code == 200
        finally:
            object_store.resume()
        publisher.publish("v2")
        wait_until(lambda: _served(server.base_url) == "v2", message=f"v2 served:\n{sync.log_text()}")

        object_store.stop()  # refused connections
        try:
            unreachable = sync.failures("unreachable")
            sync.wait_failures("unreachable", at_least=unreachable + 1)
        finally:
            object_store.start()  # back, empty
        publisher.recreate_bucket()
        sync.wait_failures("no_current")
        assert _served(server.base_url) == "v2" and read_current_version(root) == "v2"
        publisher.publish("v3")
        wait_until(lambda: _served(server.base_url) == "v3", message=f"v3 served:\n{sync.log_text()}")
    log = sync.log_text()
    assert "pull failed (unreachable)" in log and "still serving v1" in log
    assert "pull failed (no_current)" in log and "still serving v2" in log


def test_sigterm_ends_a_pull_hung_on_the_store(object_store, publisher, tmp_path):
    """SIGTERM while a GET waits on a hung store exits 0 at once, not after the 30 s read timeout."""
    data_dir, root = tmp_path / "host", tmp_path / "host" / "snapshots"
    publisher.publish("v1")
    with running_sync(object_store, publisher.bucket, data_dir, READ_TIMEOUT_SECONDS="30.0") as sync:
        wait_current(root, "v1", sync)
        try:
            object_store.pause()
            time.sleep(3 * POLL_SECONDS)  # the next poll is now waiting for an answer
            started = time.monotonic()
            sync.process.send_signal(signal.SIGTERM)
            sync.process.wait(timeout=20)
            stopped_after = time.monotonic() - started
        finally:
            object_store.resume()
    assert sync.process.returncode == 0
    assert stopped_after < 5, stopped_after
    assert "stopped; serving v1" in sync.log_text()
    assert read_current_version(root) == "v1" and leftovers(root) == []


BIG_EXTRA_BYTES = 160 << 20  # zeros after data.mdb's pages: a download and checksum long enough to catch


def _big_version(publisher: Publisher, version: str) -> Path:
    """A valid snapshot whose data.mdb is BIG_EXTRA_BYTES longer (LMDB ignores the unused tail)."""
    path = publisher.build(version)
    data = path / DATA_FILE
    os.truncate(data, data.stat().st_size + BIG_EXTRA_BYTES)
    manifest = Manifest.from_json((path / MANIFEST_FILE).read_text())
    manifest.files[DATA_FILE] = file_digest(data)
    (path / MANIFEST_FILE).write_text(manifest.to_json())
    return path


@pytest.mark.e2e
def test_killed_mid_download_then_restarted(object_store, publisher, tmp_path):
    """SIGKILL while .incoming-v2 exists: v1 stays in CURRENT; the next run removes the leftover and gets v2."""
    data_dir, root = tmp_path / "host", tmp_path / "host" / "snapshots"
    publisher.publish("v1")
    with running_sync(object_store, publisher.bucket, data_dir, log_name="sync-1.log") as first:
        wait_current(root, "v1", first)
        v2 = _big_version(publisher, "v2")
        publisher.upload_file(v2)
        publisher.point_current_at("v2")
        wait_until(lambda: leftovers(root), timeout=30, interval=0.001, message=".incoming-v2 appears")
        first.process.kill()
        first.process.wait(timeout=10)
    assert leftovers(root) == [".incoming-v2"]  # it died mid-pull ...
    partial = root / ".incoming-v2" / "v2" / DATA_FILE
    assert not partial.exists() or partial.stat().st_size <= (v2 / DATA_FILE).stat().st_size
    assert read_current_version(root) == "v1" and local_versions(root) == {"v1", ".incoming-v2"}
    verify_snapshot_dir(root / "v1")  # ... and the served version is whole

    with running_sync(object_store, publisher.bucket, data_dir, log_name="sync-2.log") as second:
        wait_current(root, "v2", second, timeout=60)
        assert leftovers(root) == []
        assert verify_snapshot_dir(root / "v2").files[DATA_FILE]["bytes"] == (v2 / DATA_FILE).stat().st_size
        assert second.metric("recsys_sync_leftovers_removed_total") == 1
    assert "removed .incoming-v2: left by an interrupted pull" in second.log_text()
    publisher.client.delete_object(Bucket=publisher.bucket, Key=f"{PREFIX}/v2/{DATA_FILE}")  # moto keeps it in memory


# --- two lookup hosts, one store -----------------------------------------------------------

def _served(base_url: str) -> str | None:
    response = requests.get(f"{base_url}/readyz", timeout=5)
    return response.json()["snapshot_version"] if response.status_code == 200 else None


@pytest.mark.e2e
def test_two_hosts_follow_one_store(object_store, publisher, tmp_path):
    """Two gunicorns, each with its own folder and sync: not ready before the first publish,
    then both serve each new version within about a poll interval."""
    interval = "0.5"
    hosts = [tmp_path / "host-a", tmp_path / "host-b"]
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(running_gunicorn(host, workers=1)) for host in hosts]
        syncs = [stack.enter_context(running_sync(object_store, publisher.bucket, host,
                                                  POLL_INTERVAL_SECONDS=interval)) for host in hosts]
        for server in servers:
            response = requests.get(f"{server.base_url}/readyz", timeout=5)
            assert response.status_code == 503 and response.json()["error"]["code"] == 503
        for sync in syncs:
            sync.wait_failures("no_current")

        took = {}
        for version, first_item in (("v1", 20), ("v2", 40)):
            content = SnapshotContent(global_popular=[(first_item, 9.0), (10, 1.0)])
            publisher.publish(version, content)
            published = time.monotonic()
            for server in servers:
                wait_until(lambda: _served(server.base_url) == version, interval=0.02,
                           message=f"{version} on {server.base_url}")
            took[version] = time.monotonic() - published
            for server in servers:  # an unknown user gets the global list of the new version
                body = requests.get(f"{server.base_url}/v1/users/777/recommendations?k=1", timeout=5).json()
                assert (body["snapshot_version"], body["items"][0]["product_id"]) == (version, first_item)
        print(f"both hosts serving after the publish: {took}")
        # Poll interval + download + verify + the workers' reload check (0.1 s), on a loaded
        # machine: a generous bound, but far below what a back-off would add.
        assert all(seconds < float(interval) + 3.0 for seconds in took.values()), took
        for sync in syncs:
            wait_until(lambda: sync.metric("recsys_sync_snapshot_info", version="v2") == 1, message="v2 counted")


# --- the pieces, in process --------------------------------------------------------------------

def test_retry_delay_doubles_up_to_the_cap():
    """Back-off after failures: initial, doubled each time, never past the cap; the interval after success."""
    loop = SyncLoop(puller=None, poll_interval=5.0, backoff_initial=1.0, backoff_max=60.0)
    assert [loop.retry_delay(n) for n in range(9)] == [5.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert loop.retry_delay(10_000) == 60.0


def test_source_and_settings_are_checked(monkeypatch):
    """Only s3:// sources; bad [sync] values name their key; no source is a usage error (exit 2)."""
    assert parse_source("s3://bucket/a/b/") == ("bucket", "a/b")
    assert parse_source("s3a://bucket") == ("bucket", "")
    for bad in ("", "/var/snapshots", "gs://bucket/x", "s3:///x"):
        with pytest.raises(ValueError):
            parse_source(bad)
    with pytest.raises(ValueError, match="keep_versions"):
        SyncConfig.from_conf({"sync": {"keep_versions": 0}})
    with pytest.raises(ValueError, match="poll_interval_seconds"):
        SyncConfig.from_conf({"sync": {"poll_interval_seconds": -1}})
    monkeypatch.delenv("RECSYS_DATA_DIR", raising=False)
    assert SyncConfig.from_conf({"data_dir": "/d", "sync": {}}).snapshot_root == Path("/d/snapshots")
    assert main(["--once", "--metrics-port", "0", "--source", ""]) == 2


def test_only_the_sync_process_imports_boto3():
    """boto3 stays out of the server: only lookup_server/sync.py imports it, and building the app loads none of it."""
    importers = set()
    for source in sorted((PROJECT_ROOT / "lookup_server").rglob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            if any(n.split(".")[0] in ("boto3", "botocore") for n in names):
                importers.add(source.relative_to(PROJECT_ROOT).as_posix())
    assert importers == {"lookup_server/sync.py"}
    code = ("import sys, lookup_server; lookup_server.create_app(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            check=True, env=child_env("RECSYS__SERVER__", {}, None))
    assert result.stdout.strip() == "[]"
