"""Spark's ALS fit on two builds of OpenBLAS, side by side: the single-threaded one that
conf/spark.toml puts on the JVM's library path, and the multithreaded (pthread) one
that Debian makes the default libblas.so.3 (run with OPENBLAS_NUM_THREADS=1, as the
jobs do).

    python -m bench.als_blas              # 50k users x 20k items, ~1M interactions, rank 64, 3 pairs
    python -m bench.als_blas --quick      # 10k x 5k, ~200k interactions, 1 pair
    python -m bench.als_blas --help

The library is chosen when the JVM starts, so every run is a JVM of its own (a
subprocess with its own SparkSession), the two builds alternating so that a change
in the machine's speed during the benchmark falls on both. Each JVM fits the same
interactions ``--fits`` times: the first fit warms the JIT up and is reported apart,
the others are the figures. Per fit: wall time and the JVM's CPU time. Each run also
reports which libblas.so.3 the JVM mapped, so a missing build shows. Results:
``<out>/als_blas.json`` and ``<out>/als_blas.md``.
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.pipeline.cpu import TICKS, process_times
from schemas.settings import PROJECT_ROOT, load_conf

log = logging.getLogger("bench.als_blas")

DEFAULT_OUT = PROJECT_ROOT / "bench" / "results"
QUICK_OUT = Path(tempfile.gettempdir()) / "bench-als-blas-quick"
SERIAL = load_conf("spark")["conf"]["spark.driver.extraLibraryPath"]
PTHREAD = str(Path(SERIAL).with_name("openblas-pthread"))
FULL = {"users": 50_000, "items": 20_000, "interactions": 1_000_000, "pairs": 3}
QUICK = {"users": 10_000, "items": 5_000, "interactions": 200_000, "pairs": 1}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.als_blas", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="10k users x 5k items, one pair of runs")
    p.add_argument("--pairs", type=int, default=None, help="runs per build, alternating (default 3, --quick 1)")
    p.add_argument("--fits", type=int, default=3, help="fits per run, the first one a warm-up (default 3)")
    p.add_argument("--rank", type=int, default=64)
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", type=Path, default=None, help=f"default bench/results (--quick {QUICK_OUT})")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # one run: the library folder
    return p


def jvm_cpu_seconds(pid: int) -> float:
    """User + system CPU time of the JVM ``pid`` so far."""
    return process_times(pid)[1] / TICKS


def worker(args: argparse.Namespace, size: dict) -> None:
    """One JVM with ``args.worker`` as its library folder: fit ``args.fits`` times, print one JSON line."""
    import pyarrow as pa

    from bench.als_topk.interactions import generate
    from jobs import als
    from jobs.spark_session import get_spark

    spark = get_spark("bench-als-blas", {"conf": {"spark.driver.extraLibraryPath": args.worker}})
    jvm = spark._jvm
    pid = int(jvm.java.lang.ProcessHandle.current().pid())
    users, items, ratings = generate(size["users"], size["items"], size["interactions"], args.seed)
    frame = spark.createDataFrame(pa.table({"user": users, "item": items, "rating": ratings})).cache()
    frame.count()
    params = als.AlsParams(rank=args.rank, max_iter=args.iterations, seed=args.seed)
    fits = []
    for _ in range(args.fits):
        cpu, started = jvm_cpu_seconds(pid), time.perf_counter()
        als.fit_als(frame, params).userFactors.count()
        fits.append({"seconds": round(time.perf_counter() - started, 2),
                     "cpu_seconds": round(jvm_cpu_seconds(pid) - cpu, 2)})
    mapped = sorted({line.split()[-1] for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
                     if line.rstrip().endswith("libblas.so.3")})
    print("RESULT " + json.dumps({"library_path": args.worker, "libblas": mapped, "pairs": len(users),
                                  "fits": fits, "spark": spark.version}), flush=True)
    spark.stop()


def run_once(library_path: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, "-m", "bench.als_blas", "--worker", library_path, "--fits", str(args.fits),
               "--rank", str(args.rank), "--iterations", str(args.iterations), "--seed", str(args.seed)]
    if args.quick:
        command.append("--quick")
    done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"run with {library_path} failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def summary(runs: list[dict]) -> dict:
    """Per build: the median wall and CPU seconds of the warm fits, the warm-ups' median;
    and the pthread build's median over the serial build's (above 1: serial is faster)."""
    def median(values: list[float]) -> float | None:
        return round(statistics.median(values), 2) if values else None

    builds = {}
    for name, folder in (("serial", SERIAL), ("pthread", PTHREAD)):
        mine = [r for r in runs if r["library_path"] == folder]
        warm = [f for r in mine for f in r["fits"][1:]]
        builds[name] = {"runs": len(mine), "libblas": sorted({lib for r in mine for lib in r["libblas"]}),
                        "median_seconds": median([f["seconds"] for f in warm]),
                        "median_cpu_seconds": median([f["cpu_seconds"] for f in warm]),
                        "median_first_fit_seconds": median([r["fits"][0]["seconds"] for r in mine])}
    serial, pthread = builds["serial"]["median_seconds"], builds["pthread"]["median_seconds"]
    return {"builds": builds, "ratio_pthread_over_serial": round(pthread / serial, 2) if serial and pthread else None}


def markdown(result: dict) -> str:
    data, s = result["data"], result["summary"]
    lines = [f"# Spark ALS fit on OpenBLAS's serial and pthread builds: {data['users']:,} users x "
             f"{data['items']:,} items, {data['pairs']:,} interactions, rank {result['rank']}, "
             f"{result['iterations']} iterations", "",
             f"{result['pairs']} JVMs per build, alternating; {result['fits']} fits per JVM, the first one "
             "a warm-up. Medians of the warm fits:", "",
             "| build | libblas.so.3 the JVM mapped | fit (s) | JVM CPU (s) | first fit (s) |", "|---|---|---|---|---|"]
    def shown(value) -> str:
        return "-" if value is None else f"{value}"

    for name, b in s["builds"].items():
        lines.append(f"| {name} | {', '.join(b['libblas']) or '-'} | {shown(b['median_seconds'])} "
                     f"| {shown(b['median_cpu_seconds'])} | {shown(b['median_first_fit_seconds'])} |")
    ratio = s["ratio_pthread_over_serial"]
    lines += ["", f"pthread / serial: **{ratio}x** (above 1: the serial build is faster)." if ratio
              else "pthread / serial: - (a build has no runs).",
              "", "Every fit, in run order (seconds, CPU seconds):", ""]
    for r in result["runs"]:
        fits = ", ".join(f"{f['seconds']} ({f['cpu_seconds']})" for f in r["fits"])
        lines.append(f"- {Path(r['library_path']).name}: {fits}")
    lines += ["", result["machine_line"], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    size = dict(QUICK if args.quick else FULL)
    if args.worker is not None:
        worker(args, size)
        return 0
    from bench.quality.environment import environment, machine_line, write_results
    from jobs.cli import configure_logging

    configure_logging("INFO")
    pairs = args.pairs or size["pairs"]
    runs = []
    for pair in range(pairs):
        order = (SERIAL, PTHREAD) if pair % 2 == 0 else (PTHREAD, SERIAL)
        for folder in order:
            log.info("pair %d/%d: ALS fits with %s ...", pair + 1, pairs, folder)
            runs.append(run_once(folder, args))
            log.info("  %s", runs[-1]["fits"])
    result = {"benchmark": "als_blas", "quick": args.quick, **environment(runs[0]["spark"]),
              "data": {**size, "pairs": runs[0]["pairs"]}, "rank": args.rank, "iterations": args.iterations,
              "fits": args.fits, "pairs": pairs, "runs": runs, "summary": summary(runs)}
    result["machine_line"] = machine_line(result)
    write_results(args.out or (QUICK_OUT if args.quick else DEFAULT_OUT), "als_blas", result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
