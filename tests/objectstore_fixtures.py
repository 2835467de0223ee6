"""A real S3 API on loopback for the tests (registered as a plugin in ``conftest.py``).

One ``scripts/objectstore`` server (moto's server mode) per test session, on a free
port, started and stopped by the project's own script. It keeps objects in memory, so
``stop()`` + ``start()`` brings it back empty; ``pause()`` freezes it (connections hang,
as with a store that is down but not refusing). Tests share it: each uses its own bucket.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "objectstore"
# moto accepts any credentials; clients still need some to sign their requests.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "recsys-test", "AWS_SECRET_ACCESS_KEY": "recsys-test-secret"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ObjectStore:
    """The loopback S3 server: its endpoint, the client environment, buckets, start/stop/pause."""

    def __init__(self, folder: Path, port: int):
        self.folder = folder
        self.port = port
        self.endpoint = f"http://127.0.0.1:{port}"

    def _script(self, *args: str) -> str:
        env = {**os.environ, "OBJECTSTORE_PORT": str(self.port), "OBJECTSTORE_DIR": str(self.folder)}
        return subprocess.run([str(SCRIPT), *args], env=env, check=True, capture_output=True, text=True).stdout

    def start(self) -> None:
        self._script("start")

    def stop(self) -> None:
        self.resume()
        self._script("stop")

    @property
    def pid(self) -> int | None:
        path = self.folder / "moto.pid"
        return int(path.read_text()) if path.exists() else None

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def env(self) -> dict[str, str]:
        """What a client process needs in its environment to reach this store (conf/storage.toml's keys)."""
        return {**CREDENTIALS, "RECSYS__STORAGE__S3__ENDPOINT": f'"{self.endpoint}"',
                "RECSYS__STORAGE__S3__PATH_STYLE": "true", "AWS_EC2_METADATA_DISABLED": "true"}

    def new_bucket(self, prefix: str = "recsys") -> str:
        """A fresh, empty bucket; its name."""
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        self._script("start", "--bucket", name)
        return name


@pytest.fixture(scope="session")
def object_store(tmp_path_factory):
    """The running ``ObjectStore`` for the whole session, stopped at the end."""
    store = ObjectStore(tmp_path_factory.mktemp("objectstore"), _free_port())
    store.start()
    try:
        yield store
    finally:
        store.stop()


@pytest.fixture
def object_store_env(object_store, monkeypatch):
    """This process set up as a client of the loopback store (conf/storage.toml through the environment)."""
    for key, value in object_store.env().items():
        monkeypatch.setenv(key, value)
    return object_store
