"""Peak resident memory of the driver's Python process, the Spark JVM and the Python
workers it forks, while a step runs (Linux ``/proc`` only).

In local mode the JVM is driver and executor at once; the executors' Python side
is the ``pyspark.daemon`` and its workers, all descendants of the JVM. Single
processes report ``VmHWM`` (the kernel's exact peak, reset at the start of the
step by writing 5 to ``/proc/<pid>/clear_refs``) or, where that cannot be reset,
the highest sample; the workers report the highest sum of their sampled RSS,
every ``interval`` seconds (a worker that lives shorter than that may be missed).
A child the JVM is still spawning (``posix_spawn`` clones it sharing the JVM's memory,
until it runs its own program) is not a worker: its RSS is the JVM's, and counting it
put the JVM's 4-6 GB into the workers' sum (``worker_pids``).
"""
from __future__ import annotations

import os
import threading
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

PROC = Path("/proc")


def _status_kb(pid: int, field_name: str) -> int | None:
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_peak(pid: int) -> bool:
    try:
        (PROC / str(pid) / "clear_refs").write_text("5")
        return True
    except OSError:
        return False


def descendants(root: int) -> list[int]:
    """Every live process below ``root``."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The command may hold spaces and parentheses: the parent pid follows the last ')'.
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@contextmanager
def sampled_every(interval: float, sample: Callable[[], None], name: str) -> Iterator[None]:
    """Call ``sample()`` every ``interval`` seconds in a thread while the block runs, and
    once more after it."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(interval):
            sample()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        sample()


@dataclass
class PeakRss:
    """Use as a context manager around the step; read ``mb()`` afterwards."""
    jvm_pid: int | None
    interval: float = 0.2
    python_pid: int = field(default_factory=os.getpid)
    _peaks_kb: dict[str, int] = field(default_factory=dict)
    _exact: dict[str, bool] = field(default_factory=dict)
    _sampling: ExitStack = field(default_factory=ExitStack)

    def _singles(self) -> dict[str, int]:
        return {name: pid for name, pid in (("driver_python", self.python_pid), ("driver_jvm", self.jvm_pid))
                if pid}

    def _sample(self) -> None:
        for name, pid in self._singles().items():
            self._peaks_kb[name] = max(self._peaks_kb.get(name, 0), _status_kb(pid, "VmRSS") or 0)
        if self.jvm_pid:
            workers = sum(_status_kb(pid, "VmRSS") or 0 for pid in worker_pids(self.jvm_pid))
            self._peaks_kb["python_workers"] = max(self._peaks_kb.get("python_workers", 0), workers)

    def __enter__(self) -> "PeakRss":
        for name, pid in self._singles().items():
            self._exact[name] = _reset_peak(pid)
        self._sample()
        self._sampling.enter_context(sampled_every(self.interval, self._sample, "peak-rss"))
        return self

    def __exit__(self, *exc) -> None:
        self._sampling.close()
        for name, pid in self._singles().items():
            if self._exact.get(name):
                self._peaks_kb[name] = max(self._peaks_kb[name], _status_kb(pid, "VmHWM") or 0)

    def mb(self) -> dict[str, float]:
        """Peak MB per role: driver_python, driver_jvm, python_workers (sum)."""
        return {name: round(kb / 1024, 1) for name, kb in sorted(self._peaks_kb.items())}


def worker_pids(jvm: int) -> list[int]:
    """The JVM's descendants, less those that still run the JVM's own executable: a
    child between the JVM's clone and its exec (Hadoop's shell commands, for one)
    shares the JVM's address space, so its VmRSS would count the JVM again."""
    try:
        jvm_exe = os.readlink(PROC / str(jvm) / "exe")
    except OSError:
        return descendants(jvm)
    return [pid for pid in descendants(jvm) if _exe(pid) != jvm_exe]


def _exe(pid: int) -> str | None:
    try:
        return os.readlink(PROC / str(pid) / "exe")
    except OSError:
        return None


def jvm_pid(spark) -> int | None:
    """Process id of the SparkSession's JVM (local mode: driver and executors)."""
    try:
        return int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())
    except Exception:  # a remote/Connect session has no local JVM to watch
        return None
