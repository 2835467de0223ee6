"""Shared pieces of the event collector tests: the token, the landing files an app
or server wrote, and a real gunicorn running the collector."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from schemas.settings import PROJECT_ROOT

from tests.lookup_fixtures import free_port

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def landed(data_dir: Path, table: str, include_hidden: bool = True) -> list[dict]:
    """Every row in ``landing/<table>/``: visible files, then (if asked) hidden ones."""
    folder = Path(data_dir) / "landing" / table
    if not folder.is_dir():
        return []
    files = sorted(folder.glob("collector-*.jsonl"))
    if include_hidden:
        files += sorted(folder.glob(".collector-*.jsonl.open"))
    return [json.loads(line) for path in files for line in path.read_text().splitlines()]


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def hidden_files(data_dir: Path, table: str) -> list[Path]:
    return sorted((Path(data_dir) / "landing" / table).glob(".collector-*.jsonl.open"))


@dataclass
class CollectorServer:
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


@contextlib.contextmanager
def running_collector(data_dir: Path, workers: int = 2, extra_env: dict[str, str] | None = None,
                      start_timeout: float = 60.0):
    """Run ``gunicorn -c conf/gunicorn.collector.conf.py`` on a free port until the block
    ends, then stop it with SIGTERM (graceful: workers publish their files)."""
    port = free_port()
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS__COLLECTOR__")}
    env.update({
        "COLLECTOR_BIND": f"127.0.0.1:{port}",
        "COLLECTOR_WORKERS": str(workers),
        "COLLECTOR_TOKEN": TOKEN,
        "RECSYS_DATA_DIR": str(data_dir),
        "PYTHONUNBUFFERED": "1",
    })
    env.pop("COLLECTOR_CONTROL_SOCKET", None)
    env.update(extra_env or {})
    log_path = data_dir / "collector.log"
    command = [sys.executable, "-m", "gunicorn", "-c", str(PROJECT_ROOT / "conf" / "gunicorn.collector.conf.py")]
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=log_file,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = CollectorServer(process, f"http://127.0.0.1:{port}", log_path)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {process.returncode}:\n{server.log_text()}")
            try:
                if requests.get(f"{server.base_url}/healthz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not answer within {start_timeout}s:\n{server.log_text()}")
            time.sleep(0.1)
        yield server
    finally:
        stop_process(process)


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.terminate()  # SIGTERM: the master stops its workers gracefully
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
