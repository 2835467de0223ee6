"""Where and how a run happened: machine, versions, commit, command line, date."""
from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from schemas.settings import PROJECT_ROOT

PACKAGES = ("pyspark", "delta-spark", "implicit", "numpy", "scipy", "pandas")


def memory_gb() -> float | None:
    """Physical memory, from the page count (Linux and most Unixes)."""
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


# A 1-minute load this high as a benchmark starts means something else held about a core.
BUSY_LOAD = 1.0


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load: timings mean little if other work shared the cores."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def git_state() -> dict:
    """HEAD's commit and whether the working tree differs from it (others may be
    editing: a dirty tree means the numbers are of HEAD plus those edits)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    try:
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
        return {"commit": git("rev-parse", "HEAD"), "dirty": dirty}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def environment(spark_version: str) -> dict:
    return {
        "date": datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "command": shlex.join(getattr(sys, "orig_argv", sys.argv)),
        "machine": {"cores": os.cpu_count(), "memory_gb": memory_gb(), "load_average": load_average(),
                    "platform": platform.platform()},
        "versions": {**versions(), "spark": spark_version},
        "git": git_state(),
    }


def load_note(load: list[float] | None) -> str:
    """The load at a run's start, as a report states it: flagged when the 1-minute load
    was BUSY_LOAD or more, so the reader knows other work ran in the minute before and
    may have gone on during the run (the load average lags: after an earlier step of
    the same run it stays high for a minute); a quiet start is not flagged."""
    if not load:
        return "load average unknown at the start"
    busy = " (other work ran within the minute before, maybe during the run too)" if load[0] >= BUSY_LOAD else ""
    return f"load average {load} at the start{busy}"


def machine_line(result: dict) -> str:
    """The closing line of a benchmark's Markdown: machine, load, Spark, commit, command."""
    machine = result["machine"]
    return (f"Machine: {machine['cores']} cores, {machine['memory_gb']} GB, "
            f"{load_note(machine['load_average'])}. Spark {result['versions']['spark']}, commit "
            f"{str(result['git']['commit'])[:10]}{' (dirty tree)' if result['git']['dirty'] else ''}. "
            f"Command: `{result['command']}`.")


def write_results(out: Path, name: str, result: dict, report: str) -> None:
    """``<out>/<name>.json`` (the figures) and ``<out>/<name>.md`` (the report), and the report on stdout."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{name}.md").write_text(report)
    print(report)
