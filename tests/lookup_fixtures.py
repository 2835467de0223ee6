"""Shared pieces of the lookup server tests: small snapshots written with the real
writer, ways to break them, app fixtures, and a real gunicorn to talk to.

Test modules import the fixtures they use by name (this file is not a conftest).
"""
from __future__ import annotations

import contextlib
import json
from concurrent.futures import ThreadPoolExecutor
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from jobs.snapshot_writer import SnapshotWriter, publish
from schemas.settings import PROJECT_ROOT
from schemas.snapshot import (
    POLICY_FILE,
    CURRENT_POINTER, DATA_FILE, GLOBAL_KEY, MANIFEST_FILE, PRODUCTS_DB, USERS_DB, Manifest,
    pack_product, pack_ranked_list, pack_user, product_key, recs_db_name, user_key,
)

from lookup_server import app_state, create_app

# --- snapshot content -------------------------------------------------------

Ranked = list[tuple[int, float]]


@dataclass
class SnapshotContent:
    """What a test snapshot holds. Product 13 is inactive; 99 has no product record."""

    user_lists: dict[str, dict[int, Ranked]] = field(default_factory=lambda: {
        "popular": {
            1: [(10, 0.9), (11, 0.8), (12, 0.7), (13, 0.6), (14, 0.5), (15, 0.4), (99, 0.3)],
            2: [(20, 5.0), (21, 4.0)],
        },
        "als": {
            2: [(30, 0.75), (31, 0.5), (13, 0.25), (32, 0.125)],
        },
    })
    product_lists: dict[str, dict[int, Ranked]] = field(default_factory=lambda: {
        "als": {10: [(11, 0.9), (13, 0.8), (12, 0.7), (14, 0.6)]},
    })
    category_lists: dict[str, Ranked] = field(default_factory=lambda: {
        "shoes": [(10, 9.0), (13, 8.0), (11, 7.0), (12, 6.0), (14, 5.0)],
    })
    global_popular: Ranked | None = field(default_factory=lambda: [
        (20, 50.0), (13, 40.0), (10, 30.0), (21, 20.0), (11, 10.0)])
    # profile segment key -> its popular list
    segment_lists: dict[str, Ranked] = field(default_factory=lambda: {
        "country=DE": [(31, 3.0), (13, 2.5), (30, 2.0), (15, 1.0)],
    })
    # user id -> (activity, profile segment): 5 has a profile in a segment with a list,
    # 6 in one without; 2 has lists and no profile
    users: dict[int, tuple[str, str | None]] = field(default_factory=lambda: {
        1: ("heavy", "country=DE"), 2: ("light", None), 5: ("new", "country=DE"), 6: ("new", "country=FR"),
    })
    # product id -> (category, price, active)
    products: dict[int, tuple[str, float | None, bool]] = field(default_factory=lambda: {
        10: ("shoes", 59.0, True), 11: ("shoes", 45.5, True), 12: ("shoes", None, True),
        13: ("shoes", 80.0, False), 14: ("shoes", 20.0, True), 15: ("hats", 15.0, True),
        20: ("books", 9.5, True), 21: ("books", 12.0, True), 30: ("toys", 5.0, True),
        31: ("toys", 6.0, True), 32: ("toys", 7.0, True),
        40: ("garden", 30.0, True),  # a category without a popular list
    })
    policy: dict | None = None  # the evaluation's verdict the snapshot carries (policy.json)


def _pack(items: Ranked) -> bytes:
    return pack_ranked_list([p for p, _ in items], [s for _, s in items])


def build_snapshot(root: Path, version: str, content: SnapshotContent | None = None) -> Path:
    """Write ``root/<version>`` with the real writer, without publishing it."""
    content = content or SnapshotContent()
    with SnapshotWriter(root, version, map_size_bytes=16 << 20) as writer:
        for algorithm, lists in content.user_lists.items():
            for user_id, items in lists.items():
                writer.put(recs_db_name("user", algorithm), user_key(user_id), _pack(items))
        for algorithm, lists in content.product_lists.items():
            for product_id, items in lists.items():
                writer.put(recs_db_name("product", algorithm), product_key(product_id), _pack(items))
        for category, items in content.category_lists.items():
            writer.put(recs_db_name("category", "popular"), category.encode("utf-8"), _pack(items))
        if content.global_popular is not None:
            writer.put(recs_db_name("global", "popular"), GLOBAL_KEY, _pack(content.global_popular))
        for segment, items in content.segment_lists.items():
            writer.put(recs_db_name("segment", "popular"), segment.encode("utf-8"), _pack(items))
        for user_id, (activity, segment) in content.users.items():
            writer.put(USERS_DB, user_key(user_id), pack_user(activity, segment))
        for product_id, (category, price, active) in content.products.items():
            writer.put(PRODUCTS_DB, product_key(product_id), pack_product(category, price, active))
        extra = {POLICY_FILE: json.dumps(content.policy).encode()} if content.policy is not None else {}
        return writer.finish(Manifest(version="", created_at="2026-01-01T00:00:00Z",
                                      as_of="2026-01-01T00:00:00Z"), extra)


def publish_snapshot(root: Path, version: str, content: SnapshotContent | None = None) -> Path:
    """Write and publish ``root/<version>``; keeps every version (tests look at old ones)."""
    path = build_snapshot(root, version, content)
    publish(root, version, keep_versions=100)
    return path


# --- breaking snapshots (applied before CURRENT names them) -------------------

def truncate_data_file(path: Path) -> None:
    data = path / DATA_FILE
    os.truncate(data, data.stat().st_size // 2)


def flip_data_byte(path: Path) -> None:
    """Same size, different content: only the checksum can tell."""
    data = path / DATA_FILE
    with open(data, "r+b") as fh:
        fh.seek(data.stat().st_size - 1)
        last = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([last[0] ^ 0xFF]))


def zero_data_file(path: Path) -> None:
    """Same size, no valid LMDB header: caught by LMDB itself when checksums are off."""
    data = path / DATA_FILE
    size = data.stat().st_size
    with open(data, "r+b") as fh:
        fh.write(bytes(size))


def remove_manifest(path: Path) -> None:
    (path / MANIFEST_FILE).unlink()


@contextlib.contextmanager
def half_written_snapshot(root: Path, version: str, content: SnapshotContent | None = None):
    """``root/<version>`` as a publisher that moves the folder into place before its
    writer has finished leaves it: data.mdb being filled (the writer is still open,
    its records not committed), no manifest. The writer is aborted when the block ends."""
    content = content or SnapshotContent()
    writer = SnapshotWriter(root, version, map_size_bytes=16 << 20)
    try:
        for user_id, (activity, segment) in content.users.items():
            writer.put(USERS_DB, user_key(user_id), pack_user(activity, segment))
        os.rename(writer.tmp_dir, root / version)
        yield root / version
    finally:
        writer.abort()


def point_current_at(root: Path, version: str) -> None:
    """Write CURRENT directly, as a buggy or interrupted publisher might (publish()
    refuses a version without manifest)."""
    tmp = root / f"{CURRENT_POINTER}.tmp"
    tmp.write_text(version + "\n")
    os.replace(tmp, root / CURRENT_POINTER)


def wait_until(condition, timeout: float = 20.0, interval: float = 0.02, message: str = "condition"):
    """Poll ``condition`` until it returns a truthy value; fail after ``timeout`` seconds.

    The timeout only bounds a hang; nothing asserts how long it took.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {message}")
        time.sleep(interval)


# --- Flask app fixtures -----------------------------------------------------

@pytest.fixture
def snapshot_root(tmp_path) -> Path:
    return tmp_path / "snapshots"


@pytest.fixture
def make_app(tmp_path, monkeypatch):
    """Factory of apps reading ``tmp_path/snapshots``; their watcher threads stop at teardown."""
    monkeypatch.delenv("RECSYS_DATA_DIR", raising=False)  # it would win over data_dir
    apps = []

    def factory(**overrides):
        # The bandit off unless a test turns it on: the fixed preference order is what
        # most tests check (tests/test_bandit.py covers the switching). Impressions are
        # written on the request path, since tests click right after an answer
        # (tests/test_impressions.py covers the batched writer).
        overrides["delta"] = {"impression_flush_seconds": 0, **overrides.get("delta", {})}
        app = create_app({"data_dir": str(tmp_path), "reload_interval_seconds": 0.02,
                          "bandit": {"enabled": False}, **overrides})
        app.config["TESTING"] = True
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app_state(app).snapshot.close()


@pytest.fixture
def app(make_app, snapshot_root):
    """An app serving snapshot ``v1`` (default content) from its first request."""
    publish_snapshot(snapshot_root, "v1")
    app = make_app()
    assert app_state(app).snapshot.refresh(), "v1 should load"
    return app


@pytest.fixture
def client(app):
    return app.test_client()


ADMIN_TOKEN = "admin-token-0123456789abcdef"


@pytest.fixture
def admin_app(make_app, snapshot_root, monkeypatch):
    """An app serving ``v1`` whose admin endpoints take ADMIN_TOKEN."""
    monkeypatch.setenv("LOOKUP_ADMIN_TOKEN", ADMIN_TOKEN)
    publish_snapshot(snapshot_root, "v1")
    app = make_app()
    assert app_state(app).snapshot.refresh()
    return app


# --- a real gunicorn --------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def readyz_batch(base_url: str, n: int = 8) -> list[dict]:
    """n concurrent /readyz answers: sync workers serve one request at a time, so
    concurrency spreads them over the workers."""
    def get(_):
        response = requests.get(f"{base_url}/readyz", timeout=5)
        return response.json() if response.status_code == 200 else {}

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(get, range(n)))


@dataclass
class GunicornServer:
    process: subprocess.Popen
    base_url: str
    log_path: Path

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> set[int]:
        """Pids of the master's children (Linux /proc)."""
        pids: set[int] = set()
        for children in Path(f"/proc/{self.process.pid}/task").glob("*/children"):
            pids.update(int(p) for p in children.read_text().split())
        return pids

    def wait_all_workers_on(self, version: str, workers: int = 2) -> set[int]:
        """Poll until every worker has answered /readyz with ``version``; return their pids."""
        pids = wait_until(lambda: self.worker_pids() if len(self.worker_pids()) == workers else None,
                          message=f"{workers} gunicorn workers")
        seen: dict[int, str] = {}

        def all_on_version():
            for body in readyz_batch(self.base_url):
                if body.get("worker_pid") is not None:
                    seen[body["worker_pid"]] = body["snapshot_version"]
            return all(seen.get(pid) == version for pid in pids)

        wait_until(all_on_version, timeout=60, interval=0.05, message=f"all workers on {version}")
        return pids


def child_env(drop_prefix: str, settings: dict[str, str], extra_env: dict[str, str] | None) -> dict[str, str]:
    """This process's environment minus ``drop_prefix*`` overrides, plus ``settings`` and ``extra_env``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop_prefix)}
    env.update({**settings, "PYTHONUNBUFFERED": "1"})
    env.update(extra_env or {})
    return env


@contextlib.contextmanager
def gunicorn_process(config: str, env: dict[str, str], log_path: Path, base_url: str,
                     start_timeout: float = 60.0):
    """Run ``gunicorn -c conf/<config>`` with ``env``; yield the process once
    ``base_url``/healthz answers; SIGTERM (graceful) at the end. Output goes to
    ``log_path``, shown if it fails to start."""
    command = [sys.executable, "-m", "gunicorn", "-c", str(PROJECT_ROOT / "conf" / config)]
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=log_file,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {process.returncode}:\n{log_path.read_text(errors='replace')}")
            try:
                if requests.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout):  # not listening yet, or workers still booting
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not answer within {start_timeout}s:\n"
                                   f"{log_path.read_text(errors='replace')}")
            time.sleep(0.1)
        yield process
    finally:
        stop_process(process)


@contextlib.contextmanager
def running_gunicorn(data_dir: Path, port: int | None = None, workers: int = 2,
                     extra_env: dict[str, str] | None = None, start_timeout: float = 60.0):
    """Run the lookup server (``conf/gunicorn.conf.py``) on 127.0.0.1 until the block ends.

    Yields once /healthz answers (not /readyz: a test may start it before any
    snapshot exists). Output goes to ``data_dir/gunicorn.log``, shown if it fails.
    """
    port = port or free_port()
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    env = child_env("RECSYS__SERVER__", {
        "LOOKUP_BIND": f"127.0.0.1:{port}",
        "LOOKUP_WORKERS": str(workers),
        "RECSYS_DATA_DIR": str(data_dir),
        "RECSYS__SERVER__RELOAD_INTERVAL_SECONDS": "0.1",
    }, extra_env)
    env.pop("LOOKUP_CONTROL_SOCKET", None)
    base_url, log_path = f"http://127.0.0.1:{port}", data_dir / "gunicorn.log"
    with gunicorn_process("gunicorn.conf.py", env, log_path, base_url, start_timeout) as process:
        yield GunicornServer(process, base_url, log_path)


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)  # graceful: the master stops its workers
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
