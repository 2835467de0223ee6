"""A lookup host's sync process for the tests: ``python -m lookup_server.sync`` against
the loopback store (tests/objectstore_fixtures.py), its metrics and log."""
from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from schemas.settings import PROJECT_ROOT
from schemas.snapshot import read_current_version
from tests.lookup_fixtures import child_env, free_port, stop_process, wait_until

PREFIX = "recsys/snapshots"  # under the bucket, as [publish] target = "s3://bucket/recsys/snapshots"
POLL_SECONDS = 0.2
# Short everything: a hung store fails a pull in about 2 x 1 s (botocore's two attempts).
SYNC_SETTINGS = {"POLL_INTERVAL_SECONDS": str(POLL_SECONDS), "KEEP_VERSIONS": "2",
                 "BACKOFF_INITIAL_SECONDS": "0.2", "BACKOFF_MAX_SECONDS": "1.0",
                 "CONNECT_TIMEOUT_SECONDS": "1.0", "READ_TIMEOUT_SECONDS": "1.0"}


@dataclass
class SyncProcess:
    process: subprocess.Popen
    root: Path
    log_path: Path
    metrics_url: str

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> dict[tuple, float]:
        """``{(sample name, sorted label items): value}`` of one scrape."""
        text = requests.get(self.metrics_url, timeout=5).text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def metric(self, name: str, **labels) -> float | None:
        return self.metrics().get((name, tuple(sorted(labels.items()))))

    def failures(self, reason: str) -> float:
        return self.metric("recsys_sync_failures_total", reason=reason) or 0.0

    def wait_failures(self, reason: str, at_least: int = 1, timeout: float = 20.0) -> None:
        wait_until(lambda: self.failures(reason) >= at_least, timeout=timeout, interval=0.05,
                   message=f"{at_least} pull failures ({reason}):\n{self.log_text()}")


def sync_env(object_store, bucket: str, data_dir: Path, prefix: str = PREFIX, **settings: str) -> dict[str, str]:
    """The environment of a host's sync process: its data dir, the store, [sync] overrides."""
    merged = {**SYNC_SETTINGS, **settings}
    return child_env("RECSYS__SERVER__", {
        "RECSYS_DATA_DIR": str(data_dir),
        "RECSYS__SERVER__SYNC__SOURCE": f'"s3://{bucket}/{prefix}"',
        **{f"RECSYS__SERVER__SYNC__{key}": value for key, value in merged.items()},
    }, object_store.env())


def run_once(object_store, bucket: str, data_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lookup_server.sync", "--once", "--metrics-port", "0"],
                          cwd=PROJECT_ROOT, env=sync_env(object_store, bucket, data_dir),
                          capture_output=True, text=True, timeout=60)


@contextlib.contextmanager
def running_sync(object_store, bucket: str, data_dir: Path, log_name: str = "sync.log", prefix: str = PREFIX,
                 **settings: str):
    """``python -m lookup_server.sync`` polling until the block ends (then SIGTERM: it must exit 0)."""
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / log_name
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "lookup_server.sync", "--metrics-port", str(port)], cwd=PROJECT_ROOT,
            env=sync_env(object_store, bucket, data_dir, prefix, **settings), stdout=log_file,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    sync = SyncProcess(process, data_dir / "snapshots", log_path, f"http://127.0.0.1:{port}/metrics")

    def answers():
        assert process.poll() is None, f"sync exited with {process.returncode}:\n{sync.log_text()}"
        try:
            return requests.get(sync.metrics_url, timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    try:
        wait_until(answers, timeout=30, interval=0.05, message="the sync process's metrics")
        yield sync
    finally:
        if process.poll() is None:
            stop_process(process)
    if process.returncode not in (0, -signal.SIGKILL):
        pytest.fail(f"sync exited with {process.returncode} after SIGTERM:\n{sync.log_text()}")


def wait_current(root: Path, version: str, sync: SyncProcess, timeout: float = 20.0) -> None:
    wait_until(lambda: read_current_version(root) == version, timeout=timeout,
               message=f"local CURRENT = {version}:\n{sync.log_text()}")
