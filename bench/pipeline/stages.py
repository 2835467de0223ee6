"""The pipeline's stages as ``jobs.run_pipeline`` runs them (one SparkSession,
same functions, same settings), each timed and watched for peak memory.

Unlike ``run_pipeline`` the stages are timed one by one and the evaluation always
runs (the nightly DAG evaluates). Tuning is left out: it has a fixed time budget
(``[tuning] budget_minutes``), so its time says nothing about scale.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, is_dataclass
from datetime import datetime
from typing import Callable, Iterator

from jobs import evaluation
from jobs.build_snapshot import build_snapshot
from jobs.ingest import run_ingest
from jobs.paths import DataPaths
from jobs.run_pipeline import ALGORITHM_STEPS
from jobs.tuned import with_tuned

from bench.pipeline.cpu import CpuMeter
from bench.quality.environment import load_average
from bench.snapshot_build.peak_rss import PeakRss, jvm_pid

log = logging.getLogger(__name__)

# In run_pipeline's order; hybrid blends the lists before it, ranked re-ranks them.
STAGES = ("ingest", "popular", "als", "ease", "content", "hybrid", "ranked", "evaluation", "snapshot")
# A failure here leaves nothing for the later stages to read (run_pipeline stops too).
REQUIRED = ("ingest",)


def stage_actions(spark, paths: DataPaths, as_of: datetime, settings: dict) -> dict[str, Callable[[], object]]:
    """Stage name -> a call doing what run_pipeline does for it."""
    def algorithm(name: str) -> Callable[[], object]:
        params_of, run = ALGORITHM_STEPS[name]
        return lambda: {"lists": run(spark, paths, as_of, params_of(tuned()))}

    def tuned() -> dict:  # after ingest, as run_pipeline does (no tuning here: nothing to pick up)
        return with_tuned(settings, paths.root)

    return {
        "ingest": lambda: {table: asdict(counts) if is_dataclass(counts) else counts
                           for table, counts in run_ingest(spark, paths, as_of, settings["ingest"]).items()},
        **{name: algorithm(name) for name in ("popular", "als", "ease", "content", "hybrid", "ranked")},
        "evaluation": lambda: {"best": evaluation.run_evaluation(
            spark, paths, as_of, tuned(), evaluation.params_from_settings(tuned()["evaluation"]))["best"]},
        "snapshot": lambda: _snapshot(build_snapshot(spark, paths, as_of, settings["snapshot"])),
    }


def _snapshot(manifest) -> dict:
    return {"version": manifest.version, "databases": manifest.databases}


def run_stages(spark, paths: DataPaths, as_of: datetime, settings: dict,
               names: tuple[str, ...] = STAGES) -> Iterator[dict]:
    """Yield, per stage, when it starts (``status: running``) and when it ends (``ok``
    or ``failed``): the caller writes results each time, so a run killed half-way
    still says which stage it had reached."""
    actions = stage_actions(spark, paths, as_of, settings)
    pid = jvm_pid(spark)
    for name in names:
        entry = {"stage": name, "status": "running", "load_average_start": load_average()}
        yield entry
        started = time.perf_counter()
        with PeakRss(pid) as memory, CpuMeter(pid) as cpu:
            try:
                entry["detail"] = actions[name]()
                entry["status"] = "ok"
            except Exception as exc:  # one stage must not hide the others' figures
                log.exception("stage %s failed", name)
                entry["status"] = "failed"
                entry["error"] = f"{type(exc).__name__}: {exc}"[:500]
            except BaseException:  # stopped (SIGTERM, Ctrl-C): say how far the stage had got
                entry["status"] = "stopped"
                entry["seconds"] = round(time.perf_counter() - started, 2)
                entry["cpu_seconds"] = round(cpu.seconds(), 1)
                entry["load_average_end"] = load_average()
                raise
        entry["seconds"] = round(time.perf_counter() - started, 2)
        # Against 2 x wall on 2 cores: how much of the machine the stage got.
        entry["cpu_seconds"] = round(cpu.seconds(), 1)
        entry["peak_rss_mb"] = memory.mb()
        entry["load_average_end"] = load_average()
        log.info("stage %s %s in %.1f s, peak RSS %s", name, entry["status"], entry["seconds"], entry["peak_rss_mb"])
        yield entry
        if entry["status"] == "failed" and name in REQUIRED:
            return
