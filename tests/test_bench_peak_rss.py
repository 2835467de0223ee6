"""bench.snapshot_build.peak_rss: which of the JVM's descendants count as workers."""
from __future__ import annotations

import subprocess
import sys
import time

from bench.snapshot_build.peak_rss import descendants, worker_pids


def test_a_child_running_the_parents_own_executable_is_not_a_worker():
    """The stand-in for the JVM starts one child on its own executable (as a child the
    JVM is still spawning looks: its memory is the JVM's) and one on another program
    (a worker); only the other program's child is a worker."""
    code = ("import subprocess, sys, time\n"
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            "subprocess.Popen(['sleep', '60'])\n"
            "time.sleep(60)\n")
    root = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 30
        while len(descendants(root.pid)) < 2 or "sleep" not in map(_comm, descendants(root.pid)):
            assert time.monotonic() < deadline, "timed out waiting for the two children to run their programs"
            time.sleep(0.02)
        children = descendants(root.pid)
        workers = worker_pids(root.pid)
        assert len(workers) == 1
        assert _comm(workers[0]) == "sleep"
        assert set(workers) < set(children)
    finally:
        for pid in descendants(root.pid):
            subprocess.run(["kill", str(pid)], check=False)
        root.kill()
        root.wait()


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""
