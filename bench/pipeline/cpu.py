"""CPU seconds used by the pipeline's own processes: with other work on the same
cores, wall time alone cannot tell a slow stage from a starved one.

Counted: the driver's Python, the JVM and every live process below it (the
``pyspark.daemon`` and its workers), each with its reaped children (a worker that
ended and was waited for counts through its parent's ``cutime``). A process that
ended within the step without being reaped is missed: an approximation.
"""
from __future__ import annotations

import os

from bench.snapshot_build.peak_rss import PROC, descendants

TICKS = os.sysconf("SC_CLK_TCK")


def _ticks(pid: int) -> int:
    try:
        # Fields after the command (which may hold spaces): utime, stime, cutime, cstime are 14-17.
        fields = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(f) for f in fields[11:15])
    except (OSError, ValueError, IndexError):
        return 0


def tree_cpu_seconds(jvm_pid: int | None, python_pid: int | None = None) -> float:
    """CPU seconds so far of the driver's Python, the JVM and the JVM's descendants."""
    pids = [p for p in (python_pid or os.getpid(), jvm_pid) if p]
    if jvm_pid:
        pids += descendants(jvm_pid)
    return sum(_ticks(pid) for pid in pids) / TICKS
