"""What the standalone cluster and the object store cost the nightly pipeline on one
machine: ``bench.pipeline``'s stages on the same generated data twice, side by side in
one run, each in a fresh process (its own driver JVM):

- ``local``: master ``local[2]``, the data dir a local folder (as ``bench.pipeline`` runs);
- ``cluster``: the loopback standalone cluster (``scripts/cluster``: a master and two
  workers of 1 core and 2g, started by the benchmark on free ports in a folder of its
  own and stopped at the end, whatever happened), the data dir
  ``s3a://bench-cluster-overhead/recsys`` on ``scripts/objectstore`` (moto's S3 API, in
  memory, started and stopped the same way). The landing files are uploaded to the
  bucket first; the upload is timed apart, not in the pipeline's total.

The driver runs in the benchmark's child process, not under spark-submit: master
``spark://127.0.0.1:<port>``, ``spark.executor.memory`` what a worker offers (2g),
``spark.cores.max`` 2 (one executor per worker). The executors' Python workers run the
driver's interpreter (``PYSPARK_PYTHON``, the project's virtualenv) and import ``jobs``
and ``schemas`` from its editable install of this checkout: nothing is shipped, so the
cluster mode only works on this machine. Executors read the store's endpoint and
credentials from their worker's environment, which the benchmark starts the cluster with.
Shuffle partitions and default parallelism are conf/spark.toml's in both modes, the
driver's memory 12g in both (``bench.pipeline``'s setting).

Both run on the same cores, so the ratio cluster / local is the cost of the cluster's
machinery (RPC, executors in JVMs of their own, task serialisation) and of the object
store (every read, listing and commit an HTTP request to a Python server) on one
machine: expect it above 1, and not a figure for a real cluster.

    python -m bench.cluster_overhead                  # 1M events (make bench-cluster)
    python -m bench.cluster_overhead --scale 50k --out /tmp/co --work /tmp/co-work   # a smoke run

Results: ``bench/results/cluster_overhead.json`` and ``cluster_overhead.md``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from schemas.settings import PROJECT_ROOT, load_conf

from jobs.cli import configure_logging
from jobs.paths import DataPaths

from bench.cluster_overhead import services
from bench.pipeline.__main__ import AS_OF, clear_outputs, generate_landing
from bench.pipeline.cpu import CpuMeter
from bench.pipeline.scales import Scale
from bench.quality.environment import environment, load_average, machine_line, write_results

log = logging.getLogger("bench.cluster_overhead")

MODES = ("local", "cluster")
LOCAL_MASTER = "local[2]"
DRIVER_MEMORY = "12g"  # bench.pipeline's: the snapshot build at 100k users needs more than conf's 4g
BUCKET, PREFIX = "bench-cluster-overhead", "recsys"
METHODS = ("GET", "HEAD", "PUT", "POST", "DELETE")
EXECUTOR_WAIT_SECONDS = 120
DEFAULT_OUT = PROJECT_ROOT / "bench" / "results"
DEFAULT_WORK = PROJECT_ROOT / "var" / "bench" / "cluster_overhead"
RESULTS = "cluster_overhead"
# Why the report has no bytes-read figure (see bench/README.md).
BYTES_READ_NOT_MEASURED = (
    "moto's log has no response sizes, a process's /proc I/O counters leave out socket sends, and "
    "both Spark's task input metrics and s3a's own counters (Hadoop's file-system statistics, "
    "stream_read_bytes) count only a Parquet file's footer when it is read with vectored reads, "
    "Parquet's default here.")


# --- one mode, in a child process ---------------------------------------------------

def wait_for_executors(spark, count: int, timeout: float = EXECUTOR_WAIT_SECONDS) -> int:
    """Block until ``count`` executors have registered (the driver is not one); how many did."""
    deadline = time.monotonic() + timeout
    while True:
        registered = spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1
        if registered >= count or time.monotonic() > deadline:
            return registered
        time.sleep(0.2)


def run_mode(scale: Scale, mode: str, data_dir: str, master: str, store_dir: Path | None,
             cluster_dir: Path | None) -> dict:
    """One pass over every stage in this process. In the cluster mode each stage also
    gets the executors' CPU (the workers' process trees), the store's CPU and the
    requests the store answered during it (its log between the stage's start and end)."""
    from jobs.spark_session import get_spark
    from bench.pipeline.stages import run_stages

    conf = {"spark.driver.memory": DRIVER_MEMORY}
    if mode == "cluster":
        conf |= {"spark.executor.memory": services.WORKER_MEMORY,
                 "spark.cores.max": str(services.WORKERS * services.WORKER_CORES)}
    else:
        clear_outputs(Path(data_dir))
    started = time.perf_counter()
    spark = get_spark(f"bench-cluster-overhead-{mode}", {"master": master, "conf": conf})
    # Executors register after the session is up: wait for them, so the first stage
    # does not pay for their start (local mode has its executor in the driver's JVM).
    executors = wait_for_executors(spark, services.WORKERS) if mode == "cluster" else 0
    session_seconds = round(time.perf_counter() - started, 2)
    spark_conf = spark.sparkContext.getConf()
    settings = {key: spark_conf.get(key, None) for key in (
        "spark.master", "spark.driver.memory", "spark.executor.memory", "spark.cores.max",
        "spark.sql.shuffle.partitions", "spark.default.parallelism")}
    store = services.Store(store_dir, 0, BUCKET) if store_dir else None
    workers = services.Cluster(cluster_dir, 0, {}).worker_pids() if cluster_dir else []
    stages: dict[str, dict] = {}
    meters, offset = ExitStack(), 0
    for entry in run_stages(spark, DataPaths(data_dir), AS_OF, load_conf("jobs")):
        if entry["status"] == "running":
            # A worker's tree holds its executor and that executor's Python workers.
            executor_meters = [meters.enter_context(CpuMeter(pid, pid)) for pid in workers]
            store_meter = meters.enter_context(CpuMeter(store.pid, store.pid)) if store and store.pid else None
            offset = store.log_offset() if store else 0
        else:
            meters.close()
            if workers:
                entry["cpu_seconds_executors"] = round(sum(m.seconds() for m in executor_meters), 1)
            if store_meter:
                entry["cpu_seconds_store"] = round(store_meter.seconds(), 1)
            if store:
                entry["requests"] = services.requests_by_method(store.log_file, offset, store.log_offset())
        stages[entry["stage"]] = entry
    spark.stop()
    return {"mode": mode, "data_dir": data_dir, "settings": settings, "executors": executors,
            "session_seconds": session_seconds, "stages": list(stages.values()),
            "seconds": round(sum(s.get("seconds", 0) for s in stages.values()), 1),
            "failed": [s["stage"] for s in stages.values() if s["status"] != "ok"]}


def child_run(args: argparse.Namespace, mode: str, data_dir: str, master: str, env: dict,
              store: services.Store | None = None, cluster: services.Cluster | None = None) -> dict:
    argv = [sys.executable, "-m", "bench.cluster_overhead", "--scale", args.scale, "--mode", mode,
            "--data-dir", data_dir, "--master", master, "--log-level", args.log_level]
    if store:
        argv += ["--store-dir", str(store.folder)]
    if cluster:
        argv += ["--cluster-dir", str(cluster.folder)]
    started = time.perf_counter()
    child = subprocess.run(argv, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, text=True)
    if child.returncode:
        raise RuntimeError(f"the {mode} run exited with code {child.returncode} (its log is above)")
    run = json.loads(child.stdout.strip().splitlines()[-1])
    log.info("%s: %.0f s (%.0f s with start-up)", mode, run["seconds"], time.perf_counter() - started)
    return run


# --- the cluster mode's set-up ------------------------------------------------------

def fresh_folder(folder: Path, pid_files: tuple[str, ...]) -> Path:
    """``folder`` emptied for this run; refused if a process a previous run left still runs there."""
    for name in pid_files:
        path = folder / name
        try:
            os.kill(int(path.read_text().strip()), 0)
        except (OSError, ValueError):
            continue
        raise RuntimeError(f"{path}: a previous run's process still runs (scripts/cluster or scripts/objectstore "
                           f"stop with that folder)")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def upload_landing(landing: Path, store: services.Store) -> dict:
    """The generated landing folders to ``s3a://BUCKET/PREFIX/landing`` (its marker files stay local)."""
    from schemas.storage import Location

    offset = store.log_offset()
    started = time.perf_counter()
    folders = sorted(p for p in landing.iterdir() if p.is_dir() and not p.name.startswith("."))
    for folder in folders:
        Location.of(f"s3a://{BUCKET}/{PREFIX}/landing/{folder.name}").upload_dir(folder)
    seconds = round(time.perf_counter() - started, 2)
    files = [p for folder in folders for p in folder.rglob("*") if p.is_file()]
    return {"seconds": seconds, "files": len(files), "bytes": sum(p.stat().st_size for p in files),
            "requests": services.requests_by_method(store.log_file, offset, store.log_offset())}


def run_cluster_mode(args: argparse.Namespace, root: Path, work: Path) -> tuple[dict, list[float] | None]:
    """Store, cluster, upload, the pipeline; what the store holds; both stopped at the end."""
    with services.running_store(fresh_folder(work / "store", ("moto.pid",)), BUCKET) as store:
        client = store.client_env()
        os.environ.update(client)  # this process lists and uploads through pyarrow as conf/storage.toml says
        cluster_folder = fresh_folder(work / "cluster", ("master.pid", "worker-1.pid", "worker-2.pid"))
        with services.running_cluster(cluster_folder, client) as cluster:
            upload = upload_landing(root / "landing", store)
            log.info("landing uploaded: %d files, %.1f MB in %.1f s", upload["files"], upload["bytes"] / 1e6,
                     upload["seconds"])
            load = load_average()
            offset = store.log_offset()
            run = child_run(args, "cluster", f"s3a://{BUCKET}/{PREFIX}", cluster.master, {**os.environ, **client},
                            store, cluster)
            run["requests"] = services.requests_by_method(store.log_file, offset, store.log_offset())
            run["upload"] = upload
        run["cluster"] = {"master": cluster.master, "folder": str(cluster.folder), "workers": services.WORKERS,
                          "worker_cores": services.WORKER_CORES, "worker_memory": services.WORKER_MEMORY,
                          "left_running": cluster.left_running}
        run["store"] = {"endpoint": store.endpoint, "folder": str(store.folder),
                        "contents": services.store_contents(BUCKET, PREFIX)}
    run["store"]["left_running"] = store.left_running
    if cluster.left_running or store.left_running:
        log.error("still running after stop: cluster %s, store %s", cluster.left_running, store.left_running)
    return run, load


# --- the figures --------------------------------------------------------------------

def stage_seconds(run: dict) -> dict[str, float | None]:
    """Seconds per stage; None for a stage that did not end ``ok`` (failed or stopped)."""
    return {s["stage"]: s.get("seconds") if s["status"] == "ok" else None for s in run["stages"]}


def ratios(runs: dict) -> dict:
    """Cluster / local per stage (None where either did not complete it) and over the pipeline."""
    local, cluster = stage_seconds(runs["local"]), stage_seconds(runs["cluster"])
    per_stage = {stage: (round(cluster[stage] / seconds, 2) if seconds and cluster.get(stage) is not None else None)
                 for stage, seconds in local.items()}
    total = runs["cluster"]["seconds"] / runs["local"]["seconds"] if runs["local"]["seconds"] else None
    return {"stages": per_stage, "pipeline": None if total is None else round(total, 2)}


def _mb(count: int) -> str:
    return f"{count / 1e6:,.1f} MB"


def _requests(counts: dict[str, int] | None) -> str:
    if not counts:
        return "-"
    text = " / ".join(str(counts.get(method, 0)) for method in METHODS)
    others = {k: n for k, n in counts.items() if k not in METHODS and not k.startswith("status_")}
    return text + (f" (+ {json.dumps(others)})" if others else "")


def _both(runs: dict, key: str) -> str:
    """A setting of both runs: once if they agree."""
    local, cluster = (runs[mode]["settings"].get(key) for mode in MODES)
    return f"{local} in both" if local == cluster else f"{local} local, {cluster} on the cluster"


def _cpu(stage: dict) -> str:
    parts = [stage.get(key) for key in ("cpu_seconds", "cpu_seconds_executors", "cpu_seconds_store")]
    return " / ".join("-" if p is None else f"{p:.0f}" for p in parts)


def report(result: dict) -> str:
    runs, ratio, scale = result["runs"], result["ratio"], result["scale"]
    local, cluster = runs["local"], runs["cluster"]
    settings = cluster["settings"]
    lines = [
        "# What the cluster and the object store cost the nightly pipeline on one machine", "",
        f"`{scale['name']}` generated events ({scale['events']:,} events, {scale['users']:,} users, "
        f"{scale['products']:,} products), every stage of `bench.pipeline` twice, each in a fresh process: "
        f"**local** (master `{local['settings']['spark.master']}`, the data dir a local folder) and **cluster** "
        f"(the loopback standalone cluster, {services.WORKERS} workers of {services.WORKER_CORES} core and "
        f"{services.WORKER_MEMORY}: executors of {settings['spark.executor.memory']}, "
        f"{settings['spark.cores.max']} cores in all; the data dir `{cluster['data_dir']}` on "
        "`scripts/objectstore`, moto's S3 API in memory). Shuffle partitions "
        f"{_both(runs, 'spark.sql.shuffle.partitions')}, default parallelism "
        f"{_both(runs, 'spark.default.parallelism')}, driver memory {_both(runs, 'spark.driver.memory')}. "
        "Both run on the "
        "same cores: the ratio is what the cluster's machinery and the store's HTTP requests cost on one "
        "machine, not a speed-up to expect.", "",
        "| stage | local (s) | cluster (s) | cluster / local | CPU local (s) | CPU cluster: driver / executors / "
        "store (s) | store requests: GET / HEAD / PUT / POST / DELETE |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    cluster_stages = {s["stage"]: s for s in cluster["stages"]}
    for stage in local["stages"]:
        name, other = stage["stage"], cluster_stages.get(stage["stage"], {})
        seconds = [s.get("seconds") for s in (stage, other)]
        shown = [f"{s:.1f}" if s is not None else "-" for s in seconds]
        shown = [f"{text} ({s['status']})" if s.get("status", "ok") != "ok" else text
                 for text, s in zip(shown, (stage, other))]
        share = ratio["stages"].get(name)
        local_cpu = stage.get("cpu_seconds")
        lines.append(f"| {name} | {shown[0]} | {shown[1]} | {'-' if share is None else f'{share:.2f}'} | "
                     f"{'-' if local_cpu is None else f'{local_cpu:.0f}'} | {_cpu(other) if other else '-'} | "
                     f"{_requests(other.get('requests'))} |")
    total = ratio["pipeline"]
    lines += [f"| **pipeline** | **{local['seconds']:.1f}** | **{cluster['seconds']:.1f}** | "
              f"**{'-' if total is None else f'{total:.2f}'}** | | | {_requests(cluster.get('requests'))} |", ""]
    upload, contents = cluster["upload"], cluster["store"]["contents"]
    requests = cluster.get("requests", {})
    refused = {k: n for k, n in requests.items() if k.startswith("status_")}
    lines += [
        f"Not in the totals: starting the session, {local['session_seconds']:.1f} s local and "
        f"{cluster['session_seconds']:.1f} s on the cluster (until its {cluster['executors']} executors had "
        f"registered); uploading the landing files to the store, {upload['seconds']:.1f} s for "
        f"{upload['files']:,} files ({_mb(upload['bytes'])}; requests {_requests(upload['requests'])}).", "",
        "CPU: local, the driver's JVM (its executor inside) and Python workers; on the cluster, the driver "
        "the same way, the workers' process trees (executor JVMs and their Python workers) and the store's "
        "server. Store requests: one line of the server's log (`moto.log`) per request, counted by method "
        "between the stage's start and end; the pipeline's row is the whole child process (session start "
        f"and stop included): {services.total_requests(requests):,} requests"
        + (f", refused {json.dumps(refused)} (a HEAD answered 404 is how an S3 client asks whether a key "
           "exists)" if refused else "") + ".", "",
        f"The store at the end: {_mb(contents['bytes'])} in {contents['objects']:,} objects under "
        f"`s3a://{BUCKET}` ({_folders(contents)}); the local run's data dir for comparison: "
        f"{_mb(local['data_dir_contents']['bytes'])} in {local['data_dir_contents']['objects']:,} files "
        f"({_folders(local['data_dir_contents'])}; Hadoop's .crc files included). Bytes read from the store "
        f"are not measured: {BYTES_READ_NOT_MEASURED}", "",
    ]
    if any(run["failed"] for run in runs.values()):
        lines += [f"Failed stages: {json.dumps({m: r['failed'] for m, r in runs.items()})}.", ""]
    lines += [f"Load average at the start of each run: {json.dumps(result['load_average_start'])}.", "",
              machine_line(result["environment"]), ""]
    return "\n".join(lines)


def _folders(contents: dict) -> str:
    return ", ".join(f"{name} {_mb(c['bytes'])} / {c['objects']:,}" for name, c in contents["folders"].items())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cluster_overhead", description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", default="1M", help="events, e.g. 50k, 1M or 10M (default 1M)")
    p.add_argument("--data-root", type=Path, default=PROJECT_ROOT / "var" / "bench" / "pipeline",
                   help="bench.pipeline's folder: the generated landing files are reused from there")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for cluster_overhead.json/.md")
    p.add_argument("--work", type=Path, default=DEFAULT_WORK,
                   help="the cluster's and the store's folders (logs, pids), emptied at the start")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    for hidden in ("--mode", "--data-dir", "--master"):  # the child processes
        p.add_argument(hidden, help=argparse.SUPPRESS)
    p.add_argument("--store-dir", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--cluster-dir", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    configure_logging(args.log_level)
    scale = Scale.of(args.scale)
    if args.mode:  # a child: one pass, its result as the last line of stdout
        print(json.dumps(run_mode(scale, args.mode, args.data_dir, args.master, args.store_dir, args.cluster_dir)))
        return 0
    root = args.data_root / scale.name
    generation = generate_landing(root, scale)
    import pyspark

    env = environment(pyspark.__version__)  # before the runs: its load average is the start's
    # Stopped from outside (SIGTERM): unwind, so the cluster and the store are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    runs, loads = {}, {}
    loads["local"] = load_average()
    runs["local"] = child_run(args, "local", str(root), LOCAL_MASTER, dict(os.environ))
    runs["local"]["data_dir_contents"] = services.local_contents(root)
    runs["cluster"], loads["cluster"] = run_cluster_mode(args, root, args.work.resolve())
    result = {"scale": scale.as_dict() | {"name": scale.name}, "generation": generation, "runs": runs,
              "load_average_start": loads, "ratio": ratios(runs), "environment": env}
    write_results(args.out, RESULTS, result, report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
