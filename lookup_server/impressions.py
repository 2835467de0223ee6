"""Impressions written in batches, off the request path.

Every answered user request records an impression (which algorithm served whom) so
that a click on its ``request_id`` can reward the bandit. One store write per
request cost an LMDB write transaction, serialised across workers by LMDB's single
writer lock, on every request. Instead each worker queues impressions and a
background thread writes what has queued every ``flush_seconds`` in one call
(one LMDB transaction, or one Redis pipeline).

What that gives up, on purpose:
- a click is credited only once its impression is written, so a click less than
  ``flush_seconds`` after the answer (a human takes longer) finds nothing;
- a worker killed with SIGKILL loses up to ``flush_seconds`` of impressions (a
  graceful stop flushes them): the bandit's counts, not any answer or event.
``flush_seconds = 0`` writes every impression on the request path, as before.
"""
from __future__ import annotations

import atexit
import logging
import threading
from typing import Callable, Sequence

from lookup_server.delta import Served

log = logging.getLogger(__name__)

# Beyond this many queued impressions (the store has been failing for a while) new
# ones are dropped, so memory stays bounded; the breaker already reports the outage.
MAX_QUEUED = 100_000


class ImpressionQueue:
    """Queues ``(request_id, Served)`` and hands them to ``write_many`` in batches."""

    def __init__(self, write_many: Callable[[Sequence[tuple[str, Served]]], bool], flush_seconds: float):
        self._write_many = write_many
        self.flush_seconds = flush_seconds
        self._queued: list[tuple[str, Served]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.dropped = 0

    def add(self, request_id: str, served: Served) -> bool:
        """Queue one impression (write it at once when ``flush_seconds`` is 0); False
        when it was not taken."""
        if self.flush_seconds <= 0:
            return self._write_many([(request_id, served)])
        with self._lock:
            if len(self._queued) >= MAX_QUEUED:
                self.dropped += 1
                return False
            self._queued.append((request_id, served))
            if self._thread is None:
                self._start()
        return True

    def flush(self) -> bool:
        """Write everything queued now; False when the store refused it (it is then dropped:
        impressions are counts for the bandit, and the breaker reports the failure)."""
        with self._lock:
            batch, self._queued = self._queued, []
        return not batch or self._write_many(batch)

    def close(self) -> None:
        """Stop the thread and write what is left (a graceful worker exit)."""
        self.stop()
        if self._thread is not None:
            self._thread.join(timeout=max(1.0, 2 * self.flush_seconds))
        self.flush()

    def stop(self) -> None:
        """Let the thread end at its next wake-up, without waiting for it or writing."""
        self._wake.set()

    def _start(self) -> None:
        # Started on first use, in the worker process: a thread does not survive fork().
        self._thread = threading.Thread(target=self._run, name="impression-writer", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def _run(self) -> None:
        while not self._wake.wait(self.flush_seconds):
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - never let the writer thread die
                log.exception("impression flush failed")
