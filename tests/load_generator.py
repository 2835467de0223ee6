"""A small, bounded load generator for the fault tests (tests/test_faults_*.py).

A few threads, each with its own ``requests.Session``, send GETs to a server on
loopback until ``stop()`` or ``max_seconds``, whichever comes first, optionally paced to
a total rate. Every request leaves one ``Outcome``, so a test can assert on all of them
(nothing is sampled or summarised away).

    with LoadGenerator(base_url, ["/v1/users/1/recommendations"]) as load:
        ...inject a fault...
    assert not [o for o in load.outcomes() if not o.ok]
"""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Sequence

import requests

# What a client may retry an idempotent GET on: no answer at all, or a proxy or server
# saying it could not serve this one (README, "Reliability").
RETRYABLE_ERRORS = (requests.ConnectionError, requests.exceptions.ChunkedEncodingError)
RETRYABLE_STATUSES = frozenset({502, 503})


@dataclass(frozen=True)
class Outcome:
    """One request as the client saw it; with a retry, the last attempt's answer."""

    path: str
    started: float            # time.monotonic() when the first attempt began
    finished: float
    attempts: int             # 2 when retried
    first_failure: str | None  # what made it retry: an exception class or "HTTP 503"
    status: int | None        # None: no HTTP answer
    error: str | None         # the exception class when there was no answer
    snapshot_version: str | None = None
    degraded: bool | None = None
    items: tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == 200


class LoadGenerator:
    """``threads`` clients GETting ``paths`` (each thread draws them at random, seeded).

    ``rate``: requests per second over all threads (None: as fast as answers come).
    ``retry_once``: repeat a request once on a connection error, 502 or 503, as the
    README advises clients to.
    """

    def __init__(self, base_url: str, paths: Sequence[str], threads: int = 4, rate: float | None = 200.0,
                 max_seconds: float = 120.0, retry_once: bool = False, timeout: float = 10.0):
        if not paths or threads < 1:
            raise ValueError("need at least one path and one thread")
        self.base_url = base_url
        self.paths = list(paths)
        self.threads = threads
        self.interval = threads / rate if rate else 0.0  # per thread
        self.max_seconds = max_seconds
        self.retry_once = retry_once
        self.timeout = timeout
        self._outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._crashed: list[Exception] = []

    def start(self) -> "LoadGenerator":
        deadline = time.monotonic() + self.max_seconds
        self._workers = [threading.Thread(target=self._run, args=(i, deadline), name=f"load-{i}", daemon=True)
                         for i in range(self.threads)]
        for worker in self._workers:
            worker.start()
        return self

    def stop(self) -> list[Outcome]:
        """Stop every thread (each finishes its request in flight); return all outcomes."""
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=2 * self.timeout + 5)
        stuck = [w.name for w in self._workers if w.is_alive()]
        if stuck or self._crashed:
            raise RuntimeError(f"load threads stuck: {stuck}, crashed: {self._crashed!r}")
        return self.outcomes()

    def __enter__(self) -> "LoadGenerator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def outcomes(self, since: float | None = None) -> list[Outcome]:
        """A copy of the outcomes so far, in completion order; ``since``: those started then or later."""
        with self._lock:
            recorded = list(self._outcomes)
        return recorded if since is None else [o for o in recorded if o.started >= since]

    # --- one client thread ----------------------------------------------------

    def _run(self, index: int, deadline: float) -> None:
        rng = random.Random(index)
        next_at = time.monotonic()
        try:
            with requests.Session() as session:
                while not self._stop.is_set() and time.monotonic() < deadline:
                    outcome = self._get(session, rng.choice(self.paths))
                    with self._lock:
                        self._outcomes.append(outcome)
                    if self.interval:  # behind schedule: carry on, no burst to catch up
                        next_at = max(next_at + self.interval, time.monotonic())
                        self._stop.wait(max(0.0, next_at - time.monotonic()))
        except Exception as exc:  # a bug here must fail the test, not thin the load silently
            self._crashed.append(exc)
            raise

    def _get(self, session: requests.Session, path: str) -> Outcome:
        started = time.monotonic()
        status, error, body = self._attempt(session, path)
        first_failure = None
        if self.retry_once and (isinstance(error, RETRYABLE_ERRORS) or status in RETRYABLE_STATUSES):
            first_failure = type(error).__name__ if error else f"HTTP {status}"
            status, error, body = self._attempt(session, path)
        body = body if isinstance(body, dict) else {}
        return Outcome(path, started, time.monotonic(), 2 if first_failure else 1, first_failure, status,
                       type(error).__name__ if error else None, body.get("snapshot_version"),
                       body.get("degraded"), tuple(item["product_id"] for item in body.get("items", ())))

    def _attempt(self, session: requests.Session, path: str) -> tuple[int | None, Exception | None, object]:
        """(status, None, parsed JSON body or None), or (None, the exception, None)."""
        try:
            response = session.get(self.base_url + path, timeout=self.timeout)
        except requests.RequestException as exc:
            return None, exc, None
        try:
            body = response.json()
        except ValueError:  # not JSON: the status says enough
            body = None
        return response.status_code, None, body
