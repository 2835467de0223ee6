"""bench.pipeline.cpu: CPU seconds of a process tree during a block, never negative."""
from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.pipeline.cpu import CpuMeter

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {seconds}: pass\n"


def _tree_root(child_code: str) -> subprocess.Popen:
    """A process that starts ``child_code`` as its child without ever waiting for it
    (SIGCHLD ignored: the kernel reaps the child, and its time reaches no parent's
    counters, as with the Spark Python workers), then stays alive."""
    code = ("import signal, subprocess, sys, time\n"
            "signal.signal(signal.SIGCHLD, signal.SIG_IGN)\n"
            f"subprocess.Popen([sys.executable, '-c', {child_code!r}])\n"
            "time.sleep(30)\n")
    return subprocess.Popen([sys.executable, "-c", code])


def test_a_worker_that_ends_inside_the_block_counts_what_it_spent_there():
    root = _tree_root(BURN.format(seconds=0.6))
    try:
        with CpuMeter(root.pid, interval=0.05) as meter:
            time.sleep(2.5)  # the worker burns 0.6 s and exits in here
        assert 0.4 <= meter.seconds() < 1.5
    finally:
        root.kill()
        root.wait()


def test_time_spent_before_the_block_by_a_worker_that_ends_in_it_is_not_subtracted():
    root = _tree_root(BURN.format(seconds=0.6) + "time.sleep(2)\n")
    try:
        time.sleep(1.5)  # the worker's CPU is spent before the block
        with CpuMeter(root.pid, python_pid=os.getpid(), interval=0.05) as meter:
            time.sleep(2)  # and it exits in here
        assert 0 <= meter.seconds() < 0.3
    finally:
        root.kill()
        root.wait()
