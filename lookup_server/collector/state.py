"""What the collector's app factory attaches to its Flask app: the settings, one
landing writer per table (made per process, on first use) and the delta handle."""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

from flask import Flask, current_app

from lookup_server.collector.config import CollectorConfig
from lookup_server.collector.landing_writer import LandingWriter
from lookup_server.collector.realtime import RealtimeDelta

_EXTENSION_KEY = "collector"


@dataclass
class CollectorState:
    config: CollectorConfig
    delta: RealtimeDelta
    _writers: dict[str, LandingWriter] = field(default_factory=dict)
    _pid: int = field(default_factory=os.getpid)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def writer(self, table: str) -> LandingWriter:
        """This process's writer for ``landing/<table>/`` (a forked child makes its own)."""
        with self._lock:
            if self._pid != os.getpid():
                self._writers, self._pid = {}, os.getpid()
            writer = self._writers.get(table)
            if writer is None:
                writer = LandingWriter(self.config.landing_folder(table), self.config.rotate_bytes,
                                       self.config.rotate_seconds)
                self._writers[table] = writer
            return writer

    def close(self) -> None:
        """Publish the open landing files and close the store (tests, shutdown)."""
        with self._lock:
            writers = list(self._writers.values()) if self._pid == os.getpid() else []
        for writer in writers:
            writer.close()
        self.delta.close()


def attach_state(app: Flask, state: CollectorState) -> None:
    app.extensions[_EXTENSION_KEY] = state


def collector_state(app: Flask | None = None) -> CollectorState:
    """The state of ``app``, or of the app handling the current request."""
    return (current_app if app is None else app).extensions[_EXTENSION_KEY]
