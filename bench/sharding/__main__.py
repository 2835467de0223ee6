"""Snapshot sharding behind nginx: throughput, latency and memory per server at 1, 2 and 4 shards.

    python -m bench.sharding               # 500k users, 100k products, 1/2/4 shards, ~6 min
    python -m bench.sharding --quick       # 50k users, 10k products, short runs (results in var/bench/)
    python -m bench.sharding --help

For each shard count N: N shard snapshots of one synthetic population, split by
``schemas.sharding.shard_of`` (``bench.sharding.shards``; kept and reused), read once
into the page cache; N gunicorn groups with the shipped ``conf/gunicorn.conf.py``,
each on its own port reading its own shard (``RECSYS__SERVER__SNAPSHOT_DIR``); Debian's
nginx in front, routing by the user id's hash (``bench.sharding.router``). Then ``wrk``
through nginx over all users, and at one shard the same load straight at the group:
the router's overhead. Last, each group's worker memory (RSS, PSS) and nginx's.

All groups share this machine's cores, so throughput cannot grow with N here; what
changes is each server's snapshot and memory, and the latency the router adds.
Results: ``<out>/sharding.json`` (every number, machine, versions, command) and
``<out>/sharding.md``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import requests

from bench.quality.environment import environment, load_average, write_results
# The serving benchmark's process and load helpers: same gunicorn start-up, same wrk script.
from bench.serving.__main__ import free_port, gunicorn, page_in, run_wrk, worker_memory
from bench.sharding.router import nginx_binary, nginx_config, running_nginx
from bench.sharding.shards import shard_snapshot_root, shard_version, write_shards
from schemas.settings import PROJECT_ROOT
from schemas.snapshot import LIST_LAYOUT_VERSION

log = logging.getLogger("bench.sharding")


def process_memory(pid: int) -> dict:
    """RSS and PSS (MB) of one process, from /proc/<pid>/smaps_rollup."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("Rss", "Pss"):
            values[name.lower() + "_mb"] = round(int(rest.split()[0]) / 1024, 1)
    return values


def nginx_memory(master_pid: int) -> dict:
    """The nginx master's and its workers' RSS and PSS, MB."""
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    return {"master": process_memory(master_pid), "workers": [process_memory(int(c)) for c in children]}


def group_answers(base_url: str) -> dict:
    """The group's recommendation answers so far, from its /metrics (all workers summed):
    how many, and how many were fallbacks (a misrouted user would be one)."""
    text = requests.get(base_url + "/metrics", timeout=10).text
    total = fallbacks = 0.0
    for line in text.splitlines():
        if line.startswith("recsys_lookup_answers_total{"):
            value = float(line.rsplit(" ", 1)[1])
            total += value
            if 'fallback=""' not in line and 'fallback="none"' not in line:
                fallbacks += value
    return {"answers": int(total), "fallback_answers": int(fallbacks)}


def tool_versions() -> dict[str, str | None]:
    """nginx, wrk and gunicorn as run (nginx and wrk print their versions on stderr/stdout)."""
    def first_match(command: list[str], pattern: str) -> str | None:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=10)
        except OSError:
            return None
        found = re.search(pattern, done.stdout + done.stderr)
        return found.group(1) if found else None

    from importlib import metadata
    return {"nginx": first_match([nginx_binary() or "nginx", "-v"], r"nginx/(\S+)"),
            "wrk": first_match(["wrk", "--version"], r"wrk (\S+)"),
            "gunicorn": metadata.version("gunicorn"), "flask": metadata.version("flask"),
            "lmdb": metadata.version("lmdb")}


def shard_set(work_dir: Path, shards: int, args) -> tuple[Path, list[dict]]:
    """The N-shard snapshots of this population, written unless a former run left them."""
    root = work_dir / f"{shards}-shards"
    info_path = root / "shards-info.json"
    if info_path.exists() and all((shard_snapshot_root(root, i) / shard_version(i, shards) / "data.mdb").exists()
                                  for i in range(shards)):
        log.info("reusing the %d-shard snapshots in %s", shards, root)
        return root, json.loads(info_path.read_text())
    shutil.rmtree(root, ignore_errors=True)
    log.info("writing %d shard snapshot(s) of %d users in all to %s", shards, args.users, root)
    info = write_shards(root, shards, args.users, args.products, args.list_length)
    info_path.write_text(json.dumps(info))
    return root, info


def measure(shards: int, root: Path, args) -> dict:
    """Start the groups and nginx for one shard count; the runs and the memory after them."""
    for index in range(shards):
        page_in(shard_snapshot_root(root, index) / shard_version(index, shards) / "data.mdb")
    common = {"LOOKUP_WORKERS": str(args.workers), "LOOKUP_LOG_LEVEL": "warning", "RECSYS_DATA_DIR": str(root)}
    all_users = (0, args.users)
    with contextlib.ExitStack() as stack:
        groups = []
        for index in range(shards):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            env = {**common, "LOOKUP_BIND": f"127.0.0.1:{port}",
                   "RECSYS__SERVER__SNAPSHOT_DIR": str(shard_snapshot_root(root, index))}
            process = stack.enter_context(gunicorn(PROJECT_ROOT / "conf" / "gunicorn.conf.py", env,
                                                   root / f"group-{index}.log", url, "/readyz", args.workers))
            groups.append({"url": url, "process": process})
        router_port = free_port()
        router = f"http://127.0.0.1:{router_port}"
        config = nginx_config([[g["url"].removeprefix("http://")] for g in groups], f"127.0.0.1:{router_port}",
                              root, worker_processes=args.nginx_workers)
        nginx = stack.enter_context(running_nginx(config, root, router))
        run_wrk(router, 8, 2, all_users)  # warm-up: imports, first pages, connection set-up
        # At one shard, the router's overhead: the same load through nginx and straight at
        # the group, alternated ``--repeats`` times, as other work on the machine varies.
        targets = [("nginx", router)] + ([("direct", groups[0]["url"])] if shards == 1 else [])
        runs, memory = [], None
        for connections in args.connections:
            for repeat in range(args.repeats if shards == 1 else 1):
                for target, url in targets:
                    run = {"target": target, "repeat": repeat, **run_wrk(url, connections, args.seconds, all_users)}
                    runs.append(run)
                    log.info("%d shard(s), %s, %d connections: %.0f req/s, p50 %.2f ms, p99 %.2f ms",
                             shards, target, connections, run["rps"], run["p50_ms"], run["p99_ms"])
                    if memory is None:  # after the same traffic (warm-up + one run) at every shard count
                        memory = {"group_workers_memory": [worker_memory(g["process"].pid)["workers"] for g in groups],
                                  "nginx_memory": nginx_memory(nginx.pid),
                                  "group_requests": [group_answers(g["url"]) for g in groups]}
        after_all = [group_answers(g["url"]) for g in groups]
    return {"runs": runs, **memory, "group_requests_after_all_runs": after_all}


def summarise(shards: int, shard_info: list[dict], measured: dict) -> dict:
    """One row of the table: per-server figures averaged over the groups."""
    # The first run through nginx at each connection count (the 1-shard repeats are for the
    # overhead line), the best of those.
    best = max((r for r in measured["runs"] if r["target"] == "nginx" and r.get("repeat", 0) == 0),
               key=lambda r: r["rps"])
    per_group_rss = [sum(w.get("rss_mb", 0) for w in ws) for ws in measured["group_workers_memory"]]
    per_group_pss = [sum(w.get("pss_mb", 0) for w in ws) for ws in measured["group_workers_memory"]]
    workers = [w for ws in measured["group_workers_memory"] for w in ws]
    nginx = measured["nginx_memory"]
    return {
        "shards": shards,
        "users_per_shard": round(sum(s["users"] for s in shard_info) / shards),
        "snapshot_mb_per_shard": round(sum(s["bytes"] for s in shard_info) / shards / 2**20, 1),
        "snapshot_mb_all_shards": round(sum(s["bytes"] for s in shard_info) / 2**20, 1),
        "rps": best["rps"], "connections": best["connections"],
        "p50_ms": best["p50_ms"], "p99_ms": best["p99_ms"], "errors": best["errors"],
        "group_rss_mb": round(sum(per_group_rss) / shards, 1), "group_pss_mb": round(sum(per_group_pss) / shards, 1),
        "worker_rss_mb": round(sum(w.get("rss_mb", 0) for w in workers) / len(workers), 1),
        "all_groups_pss_mb": round(sum(per_group_pss), 1),
        "nginx_rss_mb": round(nginx["master"].get("rss_mb", 0) + sum(w.get("rss_mb", 0) for w in nginx["workers"]), 1),
        "answers_per_group": round(sum(g["answers"] for g in measured["group_requests"]) / shards),
        "fallback_answers": sum(g["fallback_answers"] for g in measured["group_requests_after_all_runs"]),
    }


def router_overhead(runs: list[dict], connections: int, repeats: int) -> dict:
    """Medians of the alternated 1-shard runs through nginx and direct, and each one's range."""
    chosen = {target: [r for r in runs if r["target"] == target and r["connections"] == connections]
              for target in ("nginx", "direct")}
    medians = {target: {key: statistics.median(r[key] for r in rs) for key in ("rps", "p50_ms", "p99_ms")}
               for target, rs in chosen.items()}
    return {"connections": connections, "repeats": repeats,
            "ratio": round(medians["nginx"]["rps"] / medians["direct"]["rps"], 3),
            **{f"{target}_{key}": round(value, 3) for target, values in medians.items() for key, value in values.items()},
            **{f"{target}_rps_range": [min(r["rps"] for r in rs), max(r["rps"] for r in rs)]
               for target, rs in chosen.items()}}


def markdown(result: dict) -> str:
    setup, machine = result["setup"], result["environment"]["machine"]
    rows = ["| shards | users per shard | snapshot per shard (MB) | req/s via nginx | p50 ms | p99 ms | errors "
            "| answers per group | RSS per group (MB) | PSS per group (MB) "
            "| RSS per worker (MB) | PSS all groups (MB) | nginx RSS (MB) | fallbacks |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in result["summary"]:
        rows.append(f"| {row['shards']} | {row['users_per_shard']:,} | {row['snapshot_mb_per_shard']:,.0f} | "
                    f"{row['rps']:,.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['errors']} | "
                    f"{row['answers_per_group']:,} | "
                    f"{row['group_rss_mb']:,.0f} | {row['group_pss_mb']:,.0f} | {row['worker_rss_mb']:,.0f} | "
                    f"{row['all_groups_pss_mb']:,.0f} | {row['nginx_rss_mb']:.1f} | {row['fallback_answers']} |")
    overhead = result["router_overhead"]
    overhead_line = (
        f"- Router overhead (1 shard, {overhead['connections']} connections, medians of {overhead['repeats']} "
        f"alternated runs each): direct {overhead['direct_rps']:,.0f} req/s, p50 {overhead['direct_p50_ms']:.2f} ms, "
        f"p99 {overhead['direct_p99_ms']:.2f} ms; through nginx {overhead['nginx_rps']:,.0f} req/s "
        f"({overhead['ratio']:.2f}×), p50 {overhead['nginx_p50_ms']:.2f} ms, p99 {overhead['nginx_p99_ms']:.2f} ms. "
        f"Single runs ranged {overhead['direct_rps_range'][0]:,.0f}–{overhead['direct_rps_range'][1]:,.0f} req/s "
        f"direct and {overhead['nginx_rps_range'][0]:,.0f}–{overhead['nginx_rps_range'][1]:,.0f} through nginx: "
        "on a shared machine the noise is of the size of the effect."
        if overhead else "- Router overhead: not measured (no 1-shard run).")
    versions = result["environment"]["versions"]
    return "\n".join([
        "# Snapshot sharding behind nginx",
        "",
        f"{setup['users']:,} users × {setup['algorithms']} algorithms × {setup['list_length']} items, "
        f"{setup['products']:,} products, split by `schemas.sharding.shard_of` (nginx `split_clients`, MurmurHash2 "
        f"of the user id). Each shard group: gunicorn with conf/gunicorn.conf.py, {setup['workers']} sync workers; "
        f"nginx {versions.get('nginx')} with {setup['nginx_workers']} worker in front; wrk "
        f"(load.lua, a random user of all {setup['users']:,} per request) on the same {machine['cores']} cores, "
        f"{setup['seconds']:g} s per run. Load average at the start: {result['load_average_start']}, "
        f"at the end: {result['load_average_end']}.",
        "",
        *rows,
        "",
        overhead_line,
        f"- All groups run on the same {machine['cores']} cores as nginx and wrk, so sharding cannot add "
        "throughput here: each added group only adds processes competing for the same cores. Where req/s rises "
        "with the shard count on a shared machine, the likely cause is that more worker processes "
        f"({setup['workers']} per group) take a larger share of the cores from the other jobs running; on "
        "separate hosts each group brings its own cores and page cache, and throughput adds up.",
        "- What sharding changes per server: the snapshot it maps (its users' lists; products and the global, "
        "category and segment lists are in every shard) and so the memory its workers touch. Memory is taken "
        "after the warm-up and the first run through nginx (the same duration at every shard count, its "
        "answers split between the groups: answers per group). RSS counts every snapshot page a worker has touched, so it "
        "grows with the answers served until it reaches the shard's size, the ceiling (snapshot per shard); "
        "PSS splits pages shared between the workers of a group.",
        "- Fallbacks (all groups, all runs): every request asks for a user with lists, so any fallback answer "
        "would be a user sent to a group whose shard lacks them.",
        "",
        f"Command: `{result['environment']['command']}`; commit {result['environment']['git']['commit']}"
        f"{' (dirty tree)' if result['environment']['git']['dirty'] else ''}.",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--users", type=int, default=500_000)
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--list-length", type=int, default=100)
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--connections", type=int, nargs="+", default=[16])
    parser.add_argument("--seconds", type=float, default=15.0, help="per wrk run")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="gunicorn workers per group")
    parser.add_argument("--repeats", type=int, default=3,
                        help="alternated runs through nginx and direct at one shard (the router's overhead)")
    parser.add_argument("--nginx-workers", type=int, default=1, help="nginx worker_processes")
    parser.add_argument("--quick", action="store_true", help="50k users, 10k products, 4 s runs")
    parser.add_argument("--work-dir", type=Path, default=PROJECT_ROOT / "var" / "bench" / "sharding",
                        help="shard snapshots are kept here and reused for the same population")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.quick:
        args.users, args.products, args.seconds = 50_000, 10_000, 4.0
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (Debian: apt-get install wrk; `make system-packages` does it)")
    if nginx_binary() is None:
        parser.error("nginx is not installed (Debian: apt-get install nginx; `make system-packages` does it)")
    from bench.serving.synthetic import ALGORITHMS

    env_info = environment("n/a")
    env_info["versions"].update(tool_versions())
    # The record layout is in the name: shards of an older layout are not reused.
    work_dir = args.work_dir / f"{args.users}u-{args.products}p-{args.list_length}-layout{LIST_LAYOUT_VERSION}"
    per_shards, summary = [], []
    for shards in args.shards:
        root, shard_info = shard_set(work_dir, shards, args)
        measured = measure(shards, root, args)
        per_shards.append({"shards": shards, "snapshots": shard_info, **measured})
        summary.append(summarise(shards, shard_info, measured))
    one = next((p for p in per_shards if p["shards"] == 1), None)
    overhead = {}
    if one:
        connections = args.connections[0]
        overhead = router_overhead(one["runs"], connections, args.repeats)
    result = {
        "environment": env_info,
        "load_average_start": env_info["machine"]["load_average"], "load_average_end": load_average(),
        "setup": {"users": args.users, "products": args.products, "list_length": args.list_length,
                  "algorithms": len(ALGORITHMS), "shards": args.shards, "connections": args.connections,
                  "seconds": args.seconds, "repeats": args.repeats, "workers": args.workers,
                  "nginx_workers": args.nginx_workers},
        "summary": summary,
        "router_overhead": overhead,
        "per_shard_count": per_shards,
    }
    out = args.out if not args.quick or args.out != parser.get_default("out") else work_dir
    write_results(out, "sharding", result, markdown(result))
    log.info("written %s", out / "sharding.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
