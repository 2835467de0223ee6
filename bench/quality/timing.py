"""Timed steps: one log line per step, and the seconds kept for the report."""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

log = logging.getLogger("bench.quality")


@dataclass
class Stopwatch:
    seconds: float = 0.0


@contextmanager
def timed(step: str) -> Iterator[Stopwatch]:
    """Log ``step`` when it starts and when it ends with its wall time, which the
    yielded Stopwatch holds afterwards."""
    watch = Stopwatch()
    log.info("%s ...", step)
    started = time.perf_counter()
    try:
        yield watch
    finally:
        watch.seconds = time.perf_counter() - started
        log.info("%s: %.1f s", step, watch.seconds)
