"""CPU seconds used by the pipeline's own processes: with other work on the same
cores, wall time alone cannot tell a slow stage from a starved one.

Counted: the driver's Python, the JVM and every process below it (the
``pyspark.daemon`` and its workers), sampled every ``interval`` seconds while a stage
runs. Each process counts the user and system time it gained since the stage began
(or since it started, if later), its own only: a reaped child's time also lands in
its parent's counters, and counting those too would count it twice, while a worker
whose parent does not wait for it would take its time away with it (the sum over
the tree then fell between two reads: -752 s for a stage at 10M events). Missed:
what a process spends between its last sample and its exit.
"""
from __future__ import annotations

import os
import threading
from contextlib import ExitStack

from bench.snapshot_build.peak_rss import PROC, descendants, sampled_every

TICKS = os.sysconf("SC_CLK_TCK")


def process_times(pid: int) -> tuple[tuple[int, int], int] | None:
    """``((pid, start time), utime + stime in ticks)``; the start time tells a reused pid apart."""
    try:
        # Fields after the command (which may hold spaces): utime 14, stime 15, starttime 22.
        fields = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
        return (pid, int(fields[19])), int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        return None


class CpuMeter:
    """Use as a context manager around a stage; read ``seconds()`` during or after it."""

    def __init__(self, jvm_pid: int | None, python_pid: int | None = None, interval: float = 0.2):
        self.jvm_pid = jvm_pid
        self.python_pid = python_pid or os.getpid()
        self.interval = interval
        self._start: dict[tuple[int, int], int] = {}
        self._last: dict[tuple[int, int], int] = {}
        self._lock = threading.Lock()
        self._sampling = ExitStack()

    def _read(self) -> dict[tuple[int, int], int]:
        pids = {self.python_pid, *([self.jvm_pid, *descendants(self.jvm_pid)] if self.jvm_pid else [])}
        return dict(found for pid in pids if (found := process_times(pid)) is not None)

    def _sample(self) -> None:
        read = self._read()
        with self._lock:
            self._last.update(read)

    def __enter__(self) -> "CpuMeter":
        self._start = self._read()
        self._last = dict(self._start)
        self._sampling.enter_context(sampled_every(self.interval, self._sample, "cpu-meter"))
        return self

    def __exit__(self, *exc) -> None:
        self._sampling.close()

    def seconds(self) -> float:
        """CPU seconds the processes spent since the block began (never negative)."""
        with self._lock:
            return sum(ticks - self._start.get(key, 0) for key, ticks in self._last.items()) / TICKS
