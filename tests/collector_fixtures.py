"""Shared pieces of the event collector tests: the token, the landing files an app
or server wrote, and a real gunicorn running the collector."""
from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

from tests.lookup_fixtures import GunicornServer, child_env, free_port, gunicorn_process

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@contextlib.contextmanager
def in_process_collector(data_dir: Path, monkeypatch, **conf):
    """A collector app writing under ``data_dir`` with TOKEN (plus ``conf``), closed at the end."""
    from lookup_server.collector import collector_state, create_collector_app

    monkeypatch.delenv("RECSYS_DATA_DIR", raising=False)  # it would win over data_dir
    monkeypatch.delenv("COLLECTOR_TOKEN", raising=False)  # it would win over token
    app = create_collector_app({"data_dir": str(data_dir), "token": TOKEN, **conf})
    try:
        yield app
    finally:
        collector_state(app).close()


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


@contextlib.contextmanager
def running_collector(data_dir: Path, workers: int = 2, extra_env: dict[str, str] | None = None,
                      start_timeout: float = 60.0):
    """Run ``gunicorn -c conf/gunicorn.collector.conf.py`` on a free port until the block
    ends, then stop it with SIGTERM (graceful: workers publish their files)."""
    port = free_port()
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    env = child_env("RECSYS__COLLECTOR__", {
        "COLLECTOR_BIND": f"127.0.0.1:{port}",
        "COLLECTOR_WORKERS": str(workers),
        "COLLECTOR_TOKEN": TOKEN,
        "RECSYS_DATA_DIR": str(data_dir),
    }, extra_env)
    env.pop("COLLECTOR_CONTROL_SOCKET", None)
    base_url, log_path = f"http://127.0.0.1:{port}", data_dir / "collector.log"
    with gunicorn_process("gunicorn.collector.conf.py", env, log_path, base_url, start_timeout) as process:
        yield GunicornServer(process, base_url, log_path)
