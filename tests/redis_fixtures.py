"""A real ``redis-server`` for the tests (registered as a plugin in ``conftest.py``).

One server per test session, on a free loopback port, in a temporary folder, with no
persistence. Tests that need an outage stop, kill (SIGKILL, as a crash or the OOM
killer would) and start it (same port), or pause it (SIGSTOP: connections are accepted
but never answered, as with a hung server); they must restore it, e.g. in ``finally``. Tests share it, so each uses its own key prefix.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

START_SECONDS = 10.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A ``redis-server`` process; ``url`` stays valid across ``stop()``/``start()``."""

    def __init__(self, executable: str, folder: Path, port: int):
        self.executable = executable
        self.folder = folder
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._process: subprocess.Popen | None = None
        self._paused = False

    def start(self) -> None:
        """Start the server (no-op if running) and wait until it answers PING."""
        if self._process is not None and self._process.poll() is None:
            return
        log = open(self.folder / "redis.log", "ab")
        with log:
            self._process = subprocess.Popen(
                [self.executable, "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", str(self.folder)],
                cwd=self.folder, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_SECONDS
        while not _pong(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = (self.folder / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n{tail}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the server (its data is lost: there is no persistence)."""
        if self._process is None:
            return
        if self._paused:
            self.resume()
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def kill(self) -> None:
        """SIGKILL: the server dies at once, with no goodbye to its clients; ``start()``
        brings it back, empty."""
        if self._process is None:
            return
        self._process.kill()  # a stopped (paused) process dies of SIGKILL too
        self._process.wait()
        self._process, self._paused = None, False

    def pause(self) -> None:
        """Freeze the server: clients connect but get no reply until ``resume()``."""
        os.kill(self._process.pid, signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        os.kill(self._process.pid, signal.SIGCONT)
        self._paused = False


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A running ``RedisServer`` for the whole session, killed at the end."""
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.skip("redis-server is not on PATH (e.g. `apt-get install redis-server`): "
                    "the Redis delta store tests need a real server")
    server = RedisServer(executable, tmp_path_factory.mktemp("redis"), _free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
