"""bench.pipeline.cpu: CPU seconds of a process tree during a block, never negative.

The bounds are on CPU time, which the children spend in fixed amounts whatever the
load; the tests wait for what the children report, not for wall-clock delays, and
meter the tree without the test process (its polling is not what is measured)."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from bench.pipeline.cpu import CpuMeter
from bench.snapshot_build.peak_rss import descendants

# Burn 0.6 s of CPU, then say so in a file, then (optionally) wait for a second file before exiting.
WORKER = """import os, sys, time
t = time.process_time()
while time.process_time() - t < 0.6: pass
open(sys.argv[1], "w").close()
while sys.argv[2] != "-" and not os.path.exists(sys.argv[2]): time.sleep(0.02)
"""


def _tree_root(*worker_args: str) -> subprocess.Popen:
    """A process that starts the worker as its child without ever waiting for it
    (SIGCHLD ignored: the kernel reaps the child, and its time reaches no parent's
    counters, as with the Spark Python workers), then stays alive."""
    code = ("import signal, subprocess, sys, time\n"
            "signal.signal(signal.SIGCHLD, signal.SIG_IGN)\n"
            f"subprocess.Popen([sys.executable, '-c', {WORKER!r}, *{list(worker_args)!r}])\n"
            "time.sleep(120)\n")
    return subprocess.Popen([sys.executable, "-c", code])


def _wait_for(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_worker_that_ends_inside_the_block_counts_what_it_spent_there(tmp_path: Path):
    burnt = tmp_path / "burnt"
    root = _tree_root(str(burnt), "-")
    try:
        _wait_for(lambda: descendants(root.pid), "the worker to start")
        with CpuMeter(root.pid, python_pid=root.pid, interval=0.05) as meter:
            _wait_for(lambda: burnt.exists() and not descendants(root.pid), "the worker to burn and exit")
        assert 0.4 <= meter.seconds() < 1.5
    finally:
        root.kill()
        root.wait()


def test_time_spent_before_the_block_by_a_worker_that_ends_in_it_is_not_subtracted(tmp_path: Path):
    burnt, release = tmp_path / "burnt", tmp_path / "release"
    root = _tree_root(str(burnt), str(release))
    try:
        _wait_for(burnt.exists, "the worker to burn its CPU")
        with CpuMeter(root.pid, python_pid=root.pid, interval=0.05) as meter:
            release.touch()
            _wait_for(lambda: not descendants(root.pid), "the worker to exit")
        assert 0 <= meter.seconds() < 0.3
    finally:
        root.kill()
        root.wait()
