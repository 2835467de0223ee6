"""The snapshot build at production shape: ``jobs.build_snapshot.build_snapshot`` on a
synthetic lake of 1M users x 100 candidates per algorithm, 100k products and a
user_segments row per user.

    python -m bench.snapshot_build            # 1M users, 1 then 4 algorithms, ~8 min with the lake
    python -m bench.snapshot_build --quick    # 100k users, 10k products
    python -m bench.snapshot_build --help

Per algorithm count: the build's wall time (the real builder, unpublished), the
data.mdb size per user and algorithm, and the peak RSS of the driver's Python
process, the Spark JVM and the Python workers (``bench.snapshot_build.peak_rss``).
With one algorithm the build is first taken apart (``--no-profile`` skips it; it
also warms the JVM and the page cache for the timed builds): Spark pinning the
tables and listing their files, then pyarrow reading and NumPy packing every
record without storing it; the rest of the build is LMDB appends, the final
fsync and the checksum. ``--compare-with REV`` also builds each snapshot with the
builder of an older commit, after the current one. The lake is written by Spark
(``bench.snapshot_build.synthetic``) and reused by the next run of the same shape. Results: ``<out>/snapshot_build.json``
and ``<out>/snapshot_build.md``.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import lmdb

from schemas.settings import PROJECT_ROOT
from schemas.snapshot import DATA_FILE

from jobs import build_snapshot as builder
from jobs.cli import configure_logging
from jobs.paths import DataPaths
from jobs.spark_session import get_spark

from bench.quality.environment import environment, load_note
from bench.snapshot_build.baseline import builder_at
from bench.snapshot_build.peak_rss import PeakRss, jvm_pid
from bench.snapshot_build.synthetic import LakeShape, write_lake

log = logging.getLogger("bench.snapshot_build")

TARGET_SECONDS = 60.0
TARGET_BYTES_PER_USER_ALGORITHM = 1024
AS_OF = datetime(2026, 10, 31, tzinfo=timezone.utc)
DEFAULT_OUT = PROJECT_ROOT / "bench" / "results"
QUICK_OUT = Path(tempfile.gettempdir()) / "bench-snapshot-build-quick"
FULL = {"users": 1_000_000, "products": 100_000}
QUICK = {"users": 100_000, "products": 10_000}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.snapshot_build", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="100k users, 10k products (a smoke run, not the figures)")
    p.add_argument("--users", type=int, default=None, help="users (default 1M, --quick 100k)")
    p.add_argument("--products", type=int, default=None, help="products (default 100k, --quick 10k)")
    p.add_argument("--items", type=int, default=100, help="candidates per user and algorithm (default 100)")
    p.add_argument("--algorithms", type=int, nargs="+", default=[1, 4], choices=[1, 2, 3, 4],
                   help="algorithm counts to build, in order (default: 1 4)")
    p.add_argument("--partitions", type=int, default=8, help="partitions of the generated tables (default 8)")
    p.add_argument("--driver-memory", default=None,
                   help="spark.driver.memory for this run (default: conf/spark.toml's; the build itself "
                        "reads with pyarrow outside the JVM, the synthetic lake is written by Spark)")
    p.add_argument("--no-profile", action="store_true", help="skip the pin-only and read-and-pack-only runs")
    p.add_argument("--compare-with", metavar="REV", default=None,
                   help="also build each snapshot with jobs/build_snapshot.py, jobs/snapshot_writer.py and "
                        "jobs/snapshot_packing.py as they were at git revision REV, in the same session")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="where the synthetic lake and snapshots go (default var/bench/snapshot_build[-quick])")
    p.add_argument("--out", type=Path, default=None,
                   help=f"folder for snapshot_build.json/.md (default bench/results; --quick {QUICK_OUT})")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def lmdb_layout(data_dir: Path) -> dict:
    """Per named database: entries and the bytes of the pages it occupies."""
    env = lmdb.open(str(data_dir), readonly=True, lock=False, max_dbs=256, subdir=True)
    try:
        layout = {}
        with env.begin() as txn:
            names = [bytes(k).decode() for k, _ in txn.cursor()]
            for name in names:
                stat = txn.stat(env.open_db(name.encode(), txn=txn, create=False))
                pages = stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]
                layout[name] = {"entries": stat["entries"], "bytes": pages * stat["psize"],
                                "leaf_pages": stat["leaf_pages"], "depth": stat["depth"]}
        return layout
    finally:
        env.close()


def timed_build(spark, paths: DataPaths, version: str, module=builder) -> dict:
    pid = jvm_pid(spark)
    with PeakRss(pid) as memory:
        started = time.perf_counter()
        manifest = module.build_snapshot(spark, paths, AS_OF, {"keep_versions": 1, "map_size_gb": 64},
                                          version=version, do_publish=False)
        seconds = time.perf_counter() - started
    folder = paths.snapshots.local_path / version
    return {"seconds": round(seconds, 2), "data_mdb_bytes": (folder / DATA_FILE).stat().st_size,
            "databases": manifest.databases, "lmdb": lmdb_layout(folder), "peak_rss_mb": memory.mb()}


def profile_build(spark, paths: DataPaths) -> dict:
    """Seconds to pin the tables and list their files, then to read and pack every
    record without storing it: the build minus these is LMDB appends, the final
    fsync and the checksum."""
    started = time.perf_counter()
    candidates = builder._pinned(spark, paths.table("candidates"))
    products = builder._pinned(spark, paths.table("products"))
    users = builder._pinned(spark, paths.table("user_segments"))
    pin = time.perf_counter() - started
    started = time.perf_counter()
    count = 0
    sources = (builder.candidate_databases(candidates, builder.DEFAULT_READ_BUDGET_MB << 20),
               builder.product_databases(products), builder.user_databases(users))
    for source in sources:
        for _db, records in source:
            count += len(records)
    return {"pin_seconds": round(pin, 2), "read_and_pack_seconds": round(time.perf_counter() - started, 2),
            "records": count}


def run(args: argparse.Namespace, out: Path) -> dict:
    size = QUICK if args.quick else FULL
    users, products = args.users or size["users"], args.products or size["products"]
    data_dir = args.data_dir or PROJECT_ROOT / "var" / "bench" / ("snapshot_build-quick" if args.quick
                                                                 else "snapshot_build")
    paths = DataPaths(data_dir)
    overrides = {"conf": {"spark.driver.memory": args.driver_memory}} if args.driver_memory else None
    spark = get_spark("bench-snapshot-build", overrides)
    result = {"benchmark": "snapshot_build", "quick": args.quick, **environment(spark.version),
              "shape": {"users": users, "products": products, "items": args.items},
              "driver_memory": spark.sparkContext.getConf().get("spark.driver.memory"),
              "targets": {"seconds": TARGET_SECONDS, "bytes_per_user_per_algorithm": TARGET_BYTES_PER_USER_ALGORITHM},
              "runs": []}
    for count in args.algorithms:
        shape = LakeShape(users, products, args.items, count)
        started = time.perf_counter()
        written = write_lake(spark, paths, shape, AS_OF, args.partitions)
        log.info("lake with %d algorithm(s): %s written in %.1f s", count, written or "nothing",
                 time.perf_counter() - started)
        profile = None
        if count == 1 and not args.no_profile:  # first: it also warms the JVM and the Python workers
            log.info("profiling: pin the tables, then read and pack without LMDB ...")
            profile = profile_build(spark, paths)
            log.info("profile: %s", profile)
        version = f"bench-{count}alg-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"
        log.info("building %s ...", version)
        built = timed_build(spark, paths, version)
        per = built["data_mdb_bytes"] / users / count
        lists_db = built["lmdb"].get(f"recs/user/{shape.names[0]}", {})
        entry = {"algorithms": list(shape.names), **built,
                 "bytes_per_user_per_algorithm": round(per, 1),
                 "list_db_bytes_per_list": round(lists_db.get("bytes", 0) / max(lists_db.get("entries", 1), 1), 1)}
        if profile:
            entry["profile"] = profile
        log.info("%d algorithm(s): %.1f s, %.0f bytes per user per algorithm, peak RSS %s", count,
                 built["seconds"], per, built["peak_rss_mb"])
        if args.compare_with:
            before = builder_at(args.compare_with)
            log.info("building with the builder of %s ...", before.COMMIT[:10])
            old = timed_build(spark, paths, version + "-before", before)
            entry["before"] = {"commit": before.COMMIT, **old,
                               "bytes_per_user_per_algorithm": round(old["data_mdb_bytes"] / users / count, 1)}
            log.info("before (%s): %.1f s, %.0f bytes per user per algorithm, peak RSS %s", before.COMMIT[:10],
                     old["seconds"], entry["before"]["bytes_per_user_per_algorithm"], old["peak_rss_mb"])
        result["runs"].append(entry)
        write_results(out, result)  # after every build: a later one may fail (the JVM's heap, at 1M users)
        for folder in paths.snapshots.local_path.glob("bench-*"):  # a 4-algorithm snapshot is ~4 GB
            shutil.rmtree(folder, ignore_errors=True)
    spark.stop()
    return result


def markdown(result: dict) -> str:
    shape, targets = result["shape"], result["targets"]
    lines = [f"# Snapshot build: {shape['users']:,} users x {shape['items']} candidates per algorithm, "
             f"{shape['products']:,} products", "",
             "| algorithms | wall time (s) | target | bytes / user / algorithm | target | data.mdb (MB) "
             "| peak RSS driver Python (MB) | peak RSS JVM (MB) | peak RSS Python workers (MB) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for run_ in result["runs"]:
        rss = run_["peak_rss_mb"]
        lines.append(
            f"| {len(run_['algorithms'])} | {run_['seconds']:.1f} | <= {targets['seconds']:.0f} "
            f"| {run_['bytes_per_user_per_algorithm']:.0f} | <= {targets['bytes_per_user_per_algorithm']} "
            f"| {run_['data_mdb_bytes'] / 1e6:.0f} | {rss.get('driver_python', 0):.0f} "
            f"| {rss.get('driver_jvm', 0):.0f} | {rss.get('python_workers', 0):.0f} |")
    for run_ in result["runs"]:
        if "before" in run_:
            b, rss = run_["before"], run_["before"]["peak_rss_mb"]
            lines.append(
                f"| {len(run_['algorithms'])}, builder of {b['commit'][:10]} (before) | {b['seconds']:.1f} "
                f"| <= {targets['seconds']:.0f} | {b['bytes_per_user_per_algorithm']:.0f} "
                f"| <= {targets['bytes_per_user_per_algorithm']} | {b['data_mdb_bytes'] / 1e6:.0f} "
                f"| {rss.get('driver_python', 0):.0f} | {rss.get('driver_jvm', 0):.0f} "
                f"| {rss.get('python_workers', 0):.0f} |")
    lines.append("")
    for run_ in result["runs"]:
        if "profile" in run_:
            p = run_["profile"]
            lines += [f"Where the time goes (1 algorithm, {p['records']:,} records; separate runs, "
                      "so the shares are approximate):", "",
                      "| step | seconds |", "|---|---|",
                      f"| Spark pins the three tables and lists their files | {p['pin_seconds']:.1f} |",
                      f"| pyarrow reads, NumPy packs every record (not stored) | {p['read_and_pack_seconds']:.1f} |",
                      f"| the whole build (+ LMDB appends, fsync, SHA-256) | {run_['seconds']:.1f} |", ""]
    machine = result["machine"]
    per_list = ", ".join(f"{len(r['algorithms'])} algorithm(s) {r['list_db_bytes_per_list']:.0f}"
                         for r in result["runs"])
    lines += [f"Bytes per user per algorithm: data.mdb size / users / algorithms (the products and users "
              f"databases included). A 100-item list record is 608 bytes (layout 2, float16 scores scaled by "
              f"the list's largest; 804 in layout 1, float32) + an 8-byte key + LMDB's 10 bytes of node header "
              f"and pointer: 6 fit in a 4 KB page (4 of layout 1's), so 683 bytes per list is the floor of "
              f"this layout (1,024 of layout 1), reached only when keys arrive in ascending order (the writer "
              f"then appends and fills each page; a key out of order splits a page in half). Bytes per list "
              f"in the first algorithm's user database alone: {per_list}.",
              f"Machine: {machine['cores']} cores, {machine['memory_gb']} GB, {load_note(machine['load_average'])}, "
              f"{machine.get('load_average_end')} at the end (the run's own work included). Spark "
              f"{result['versions']['spark']}, commit {str(result['git']['commit'])[:10]}"
              f"{' (dirty tree)' if result['git']['dirty'] else ''}. Command: `{result['command']}`.", ""]
    return "\n".join(lines)


def write_results(out: Path, result: dict) -> None:
    result["machine"]["load_average_end"] = environment(result["versions"]["spark"])["machine"]["load_average"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "snapshot_build.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "snapshot_build.md").write_text(markdown(result))


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logging(args.log_level)
    out = args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)
    result = run(args, out)
    write_results(out, result)
    print(markdown(result))
    log.info("written %s and %s", out / "snapshot_build.json", out / "snapshot_build.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
