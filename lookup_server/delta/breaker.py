"""A circuit breaker around the delta store: a slow or dead backend costs one
timeout, then requests skip it until it has had time to recover.

States: *closed* (calls go through), *open* after ``failure_threshold`` failures in a
row (calls are skipped for ``reset_seconds``), then *half-open*: one call is let
through; success closes the breaker, failure opens it again. A skipped or failed
call returns the caller's default and marks the answer degraded; it never raises.

One breaker per worker process; request threads share it under a lock.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, TypeVar

from lookup_server.delta import DeltaUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")


class CircuitBreaker:
    def __init__(self, failure_threshold: int = 3, reset_seconds: float = 2.0,
                 clock: Callable[[], float] = time.monotonic):
        if failure_threshold < 1 or not reset_seconds > 0:
            raise ValueError("failure_threshold must be >= 1 and reset_seconds > 0")
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False
        self.skipped = 0   # calls not attempted while open (for metrics)
        self.failed = 0    # calls attempted that raised DeltaUnavailable

    @property
    def state(self) -> str:
        with self._lock:
            return self._state()

    def _state(self) -> str:
        if self._opened_at is None:
            return "closed"
        return "half_open" if self._clock() - self._opened_at >= self.reset_seconds else "open"

    def call(self, action: Callable[[], T], default: T) -> tuple[T, bool]:
        """``(action(), False)``, or ``(default, True)`` when the breaker is open or the
        call raised DeltaUnavailable."""
        with self._lock:
            state = self._state()
            if state == "open" or (state == "half_open" and self._trial_running):
                self.skipped += 1
                return default, True
            self._trial_running = state == "half_open"
        try:
            value = action()
        except DeltaUnavailable as exc:
            self._record_failure(exc)
            return default, True
        self._record_success()
        return value, False

    def _record_failure(self, exc: Exception) -> None:
        with self._lock:
            self.failed += 1
            self._failures += 1
            self._trial_running = False
            if self._opened_at is not None or self._failures >= self.failure_threshold:
                if self._opened_at is None or self._clock() - self._opened_at >= self.reset_seconds:
                    log.warning("delta store unavailable (%s): answering from the snapshot alone "
                                "for %.1f s", exc, self.reset_seconds)
                self._opened_at = self._clock()

    def _record_success(self) -> None:
        with self._lock:
            if self._opened_at is not None:
                log.info("delta store answers again: real-time merge resumed")
            self._failures = 0
            self._opened_at = None
            self._trial_running = False
