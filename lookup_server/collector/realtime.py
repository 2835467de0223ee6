"""The collector's handle on the real-time delta store.

The store is opened on first use in the process that uses it (LMDB environments
must not cross a fork; gunicorn builds the app in each worker anyway). Writing to it
is best effort by design: by the time the collector calls it, the rows are durable
in the landing zone and the next snapshot will hold them, so a store failure only
means "not visible in real time" and must never fail the request (a client retry
would duplicate the events). The lookup server's circuit breaker
(``lookup_server.delta.breaker``) skips the store for ``reset_seconds`` after
``failures`` in a row, so an outage does not add a timeout to every request.
A store that fails to open is tried again at the breaker's next trial.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable, Mapping

from lookup_server.delta import DeltaStore, DeltaUnavailable
from lookup_server.delta.breaker import CircuitBreaker

log = logging.getLogger(__name__)

Opener = Callable[[Mapping, Path], DeltaStore]


def _default_opener(settings: Mapping, data_dir: Path) -> DeltaStore:
    from lookup_server.delta.factory import open_delta_store  # backends load lazily

    return open_delta_store(settings, data_dir)


class RealtimeDelta:
    def __init__(self, settings: Mapping, data_dir: Path, enabled: bool = True, failures: int = 3,
                 reset_seconds: float = 2.0, opener: Opener | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.enabled = enabled
        self.settings = dict(settings)
        self.data_dir = Path(data_dir)
        self._opener = opener or _default_opener
        self._lock = threading.Lock()
        self._store: DeltaStore | None = None
        self._pid: int | None = None
        self.breaker = CircuitBreaker(failures, reset_seconds, clock)

    def store(self) -> DeltaStore:
        """This process's store, opened now if need be (raises what opening raises)."""
        with self._lock:
            if self._pid != os.getpid():
                self._store, self._pid = None, os.getpid()  # never reuse a parent's handle
            if self._store is None:
                self._store = self._opener(self.settings, self.data_dir)
            return self._store

    def apply(self, what: str, action: Callable[[DeltaStore], None]) -> bool:
        """Run ``action(store)``; False (and a logged warning) if the delta is
        disabled, unavailable, failed, or skipped by the open breaker. Never raises."""
        if not self.enabled:
            return False

        def attempt() -> bool:
            try:
                action(self.store())
            except DeltaUnavailable as exc:
                log.warning("real-time delta unavailable (%s): %s; the rows are durable in the "
                            "landing zone and reach the next snapshot", what, exc)
                raise
            except Exception as exc:  # a bug or backend error: same outcome for the client
                log.exception("real-time delta failed (%s); the rows are durable in the "
                              "landing zone and reach the next snapshot", what)
                raise DeltaUnavailable(str(exc)) from exc
            return True

        _, degraded = self.breaker.call(attempt, False)
        return not degraded

    def close(self) -> None:
        with self._lock:
            store, self._store = self._store, None
            if store is not None and self._pid == os.getpid():
                try:
                    store.close()
                except Exception:
                    log.exception("closing the delta store failed")
