"""The loopback services the cluster mode runs on, started and stopped with the project's
own scripts (``scripts/objectstore``, ``scripts/cluster``) on free ports and in folders
of the benchmark's, and what is read from them: the store's request log and contents.
"""
from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import socket
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from schemas.settings import PROJECT_ROOT

log = logging.getLogger(__name__)

SCRIPTS = PROJECT_ROOT / "scripts"
# moto accepts any key; clients still sign their requests with one.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench-cluster-overhead", "AWS_SECRET_ACCESS_KEY": "bench-cluster-overhead"}
# What a worker offers (scripts/cluster: 2 workers of 1 core and 2g).
WORKERS, WORKER_CORES, WORKER_MEMORY = 2, 1, "2g"
# One werkzeug line per request: '127.0.0.1 - - [06/Dec/2026 05:58:11] "GET /b/k HTTP/1.1" 200 -'.
# A status other than 200 wraps the request line in ANSI colour codes.
REQUEST_LINE = re.compile(r'\] "(?:\x1b\[[0-9;]*m)*([A-Z]+) (\S+) HTTP/[0-9.]+(?:\x1b\[[0-9;]*m)*" (\d{3}) ')
# scripts/objectstore's own liveness checks, not the benchmark's traffic.
PROBE_PATH = "/moto-api/"


def free_port_run(count: int, low: int = 20000, high: int = 40000) -> int:
    """A port with the ``count - 1`` ports after it free too (a random run, away from the
    fixed ports other work on the machine uses: 7077, 9000 and the like)."""
    for _ in range(200):
        first = random.randint(low, high - count)
        try:
            for port in range(first, first + count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise RuntimeError(f"no run of {count} free ports in {low}-{high}")


def _script(name: str, action: str, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPTS / name), action, *args], env=env, capture_output=True, text=True,
                          timeout=180)


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pids: list[int], grace: float = 10.0) -> list[int]:
    """Those of ``pids`` still running after ``grace`` seconds (a stopped server takes a moment to exit)."""
    deadline = time.monotonic() + grace
    while True:
        alive = []
        for pid in pids:
            try:
                os.kill(pid, 0)
            except OSError:
                continue
            alive.append(pid)
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


@dataclass
class Store:
    """``scripts/objectstore`` (moto's S3 API, in memory) on a free port."""

    folder: Path
    port: int
    bucket: str
    left_running: list[int] | None = None  # after the block: the pids still alive once stopped

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.folder / "moto.log"

    @property
    def pid(self) -> int | None:
        return _pid(self.folder / "moto.pid")

    def client_env(self) -> dict[str, str]:
        """What a client (this process, the driver, the workers and so their executors)
        needs to reach the store as conf/storage.toml says."""
        return {**CREDENTIALS, "RECSYS__STORAGE__S3__ENDPOINT": f'"{self.endpoint}"',
                "RECSYS__STORAGE__S3__PATH_STYLE": "true", "AWS_EC2_METADATA_DISABLED": "true"}

    def script_env(self) -> dict[str, str]:
        return {**os.environ, "OBJECTSTORE_PORT": str(self.port), "OBJECTSTORE_DIR": str(self.folder)}

    def log_offset(self) -> int:
        """Where the request log ends now: a phase's requests are the lines between two offsets."""
        try:
            return self.log_file.stat().st_size
        except OSError:
            return 0


@contextlib.contextmanager
def running_store(folder: Path, bucket: str) -> Iterator[Store]:
    """The store with ``bucket`` created, stopped when the block ends, whatever happened."""
    folder.mkdir(parents=True, exist_ok=True)
    store = Store(folder, free_port_run(1), bucket)
    try:
        started = _script("objectstore", "start", store.script_env(), "--bucket", bucket)
        if started.returncode:
            raise RuntimeError(f"scripts/objectstore start failed:\n{started.stdout}{started.stderr}")
        log.info("object store on %s (log %s)", store.endpoint, store.log_file)
        yield store
    finally:
        pids = [pid] if (pid := store.pid) else []
        stopped = _script("objectstore", "stop", store.script_env())
        store.left_running = _alive(pids)
        log.info("object store: %s", (stopped.stdout + stopped.stderr).strip() or "not running")


@dataclass
class Cluster:
    """``scripts/cluster``: a master and two workers on a free run of four ports."""

    folder: Path
    port: int
    env: dict
    left_running: list[int] | None = None  # after the block: the pids still alive once stopped

    def pids(self) -> list[int]:
        return [pid for name in ("master", *(f"worker-{n}" for n in range(1, WORKERS + 1)))
                if (pid := _pid(self.folder / f"{name}.pid"))]

    @property
    def master(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    def worker_pids(self) -> list[int]:
        return [pid for n in range(1, WORKERS + 1) if (pid := _pid(self.folder / f"worker-{n}.pid"))]


@contextlib.contextmanager
def running_cluster(folder: Path, client_env: dict[str, str]) -> Iterator[Cluster]:
    """Master and workers started with ``client_env`` in their environment (the executors
    inherit it from their worker: the store's endpoint and credentials), stopped when
    the block ends, whatever happened; ``stopped`` is then set on the Cluster."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port_run(4)  # master, its UI, the two workers' UIs
    env = {**os.environ, **client_env, "CLUSTER_DIR": str(folder), "CLUSTER_PORT": str(port)}
    cluster = Cluster(folder, port, env)
    try:
        started = _script("cluster", "start", env)
        if started.returncode:
            raise RuntimeError(f"scripts/cluster start failed:\n{started.stdout}{started.stderr}")
        log.info("%s", started.stdout.strip())
        yield cluster
    finally:
        pids = cluster.pids()
        stopped = _script("cluster", "stop", env)
        cluster.left_running = _alive(pids)
        log.info("cluster: %s", (stopped.stdout + stopped.stderr).strip().replace("\n", "; ") or "not running")


def requests_by_method(log_file: Path, start: int, end: int | None = None) -> dict[str, int]:
    """Requests the store answered between two offsets of its log, by HTTP method (its
    own liveness probes left out); ``status_4xx``/``status_5xx`` count the refused ones
    (a 404 on a HEAD is how S3 clients ask whether a key exists)."""
    with open(log_file, "rb") as fh:
        fh.seek(start)
        text = fh.read(None if end is None else max(0, end - start)).decode(errors="replace")
    return count_requests(text.splitlines())


def count_requests(lines) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for line in lines:
        match = REQUEST_LINE.search(line)
        if not match or match.group(2).startswith(PROBE_PATH):
            continue
        counts[match.group(1)] += 1
        if match.group(3)[0] in "45":
            counts[f"status_{match.group(3)[0]}xx"] += 1
    return dict(sorted(counts.items()))


def total_requests(counts: dict[str, int]) -> int:
    return sum(n for key, n in counts.items() if not key.startswith("status_"))


def store_contents(bucket: str, prefix: str = "") -> dict:
    """Bytes and objects in the whole bucket, and per folder under ``prefix`` (the data
    dir), listed through pyarrow's S3 filesystem (conf/storage.toml's store). pyarrow
    lists a key's prefixes as directories: only files, the objects, are counted."""
    import pyarrow.fs as pafs

    from schemas.storage import s3_filesystem

    per_folder: dict[str, dict[str, int]] = {}
    for info in s3_filesystem().get_file_info(pafs.FileSelector(bucket, recursive=True)):
        if info.type != pafs.FileType.File:
            continue
        key = info.path[len(bucket) + 1:]
        if prefix and key.startswith(prefix + "/"):
            key = key[len(prefix) + 1:]
        entry = per_folder.setdefault(key.split("/", 1)[0], {"bytes": 0, "objects": 0})
        entry["bytes"] += info.size or 0
        entry["objects"] += 1
    return _totals(per_folder)


def local_contents(root: Path) -> dict:
    """The same figures for a local data dir (Hadoop's .crc checksum files included; the
    landing's marker files of bench.pipeline, which are not uploaded, left out)."""
    per_folder: dict[str, dict[str, int]] = {}
    for path in root.rglob("*"):
        if path.is_file() and not (path.parent == root / "landing" and path.name.startswith(".")):
            entry = per_folder.setdefault(path.relative_to(root).parts[0], {"bytes": 0, "objects": 0})
            entry["bytes"] += path.stat().st_size
            entry["objects"] += 1
    return _totals(per_folder)


def _totals(per_folder: dict[str, dict[str, int]]) -> dict:
    return {"bytes": sum(e["bytes"] for e in per_folder.values()),
            "objects": sum(e["objects"] for e in per_folder.values()),
            "folders": dict(sorted(per_folder.items()))}
