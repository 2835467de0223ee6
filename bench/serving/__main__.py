"""Lookup serving under load, against the framework floor, side by side in one run.

    python -m bench.serving                 # 1M users, 100k products, ~6 min after the snapshot
    python -m bench.serving --quick         # 100k users, 10k products, short runs
    python -m bench.serving --help

Steps: write (or reuse) a synthetic snapshot of the production shape
(``bench.serving.synthetic``), read it once into the page cache, start the lookup
server with the shipped gunicorn config and, beside it, the floor app (a constant
JSON answer on the same route, same gunicorn settings). Then ``wrk`` (closed loop,
2 threads, on the same cores, bounded in time) at each connection count:

- ``floor``: the Flask floor;
- ``known``: users with snapshot lists (the bandit chooses among four algorithms);
- ``delta``: users with recent events in the real-time delta to merge;
- ``unknown``: users the snapshot does not know (global list fused with trending);

and two reference points, on ``known``'s ids, that split the gap to the floor:

- ``plain``: ``bench.serving.plain_app``, one LMDB read of the user's first list and
  its 20 items encoded, nothing else (the framework plus reading a list at all);
- ``delta_off``: our server with the real-time delta, and so the bandit, disabled
  (``[delta] enabled = false``): the fallback chain, catalog checks and metrics, without
  the per-request delta read, merge, exploration and Thompson sampling.

Last, a paced run of ``known`` at half the highest throughput measured, for the p99
target, and the floor paced at the same rate: the tail that wrk, gunicorn and the
kernel's scheduling on the shared cores give even a constant answer. Results:
``<out>/serving.json`` (every number, machine, versions, command) and ``<out>/serving.md``
(``--name`` for another name: ``make bench-serving`` also runs 100k and 5M users, as
``serving_100k`` and ``serving_5M``, for ``bench.growth``).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from bench.quality.environment import environment, write_results
from schemas.settings import PROJECT_ROOT
from schemas.snapshot import LIST_LAYOUT_VERSION

log = logging.getLogger("bench.serving")

HERE = Path(__file__).resolve().parent
TARGET_RATIO = 0.9
TARGET_P99_MS = 5.0
TARGET_SCENARIOS = ("known", "delta", "unknown")  # the server as shipped; the others are reference points


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def gunicorn(config: Path, env: dict[str, str], log_path: Path, base_url: str, ready_path: str,
             workers: int, timeout: float = 600.0):
    """A gunicorn master started with ``config``; yields once ``ready_path`` has answered
    200 from every worker (pids from /readyz when it gives them), SIGTERM at the end."""
    with open(log_path, "ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(config)], cwd=PROJECT_ROOT,
                                   env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline, ready_pids = time.monotonic() + timeout, set()
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited ({process.returncode}); see {log_path}")
            try:
                answer = requests.get(base_url + ready_path, timeout=5)
                if answer.status_code == 200:
                    ready_pids.add(answer.json().get("worker_pid", 0))
                    if len(ready_pids) >= workers or 0 in ready_pids:
                        break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn not ready in {timeout:.0f} s; see {log_path}")
            time.sleep(0.2)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def worker_memory(master_pid: int) -> dict:
    """RSS and PSS (shared pages split between sharers: the LMDB map) of each worker, MB."""
    workers = []
    for child in Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split():
        values = {}
        for line in Path(f"/proc/{child}/smaps_rollup").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in ("Rss", "Pss"):
                values[name.lower() + "_mb"] = round(int(rest.split()[0]) / 1024, 1)
        workers.append(values)
    return {"workers": workers}


def run_wrk(base_url: str, connections: int, seconds: float, id_range: tuple[int, int],
            path: str = "/v1/users/%d/recommendations?k=20", rate: float = 0.0) -> dict:
    """One bounded wrk run; its counts and latencies (ms) and requests per second."""
    env = {**os.environ, "BENCH_ID_LO": str(id_range[0]), "BENCH_ID_HI": str(id_range[1]), "BENCH_PATH": path,
           "BENCH_RATE": str(rate), "BENCH_CONNECTIONS": str(connections)}
    command = ["wrk", "-t", str(min(2, connections)), "-c", str(connections), "-d", f"{seconds:g}s",
               "--timeout", "5s", "-s", str(HERE / "load.lua"), base_url]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + 60, check=True)
    line = next(x for x in done.stdout.splitlines() if x.startswith("BENCH_JSON "))
    raw = json.loads(line[len("BENCH_JSON "):])
    seconds_run = raw["duration_us"] / 1e6
    errors = sum(raw["errors"].values())
    return {"connections": connections, "requests": raw["requests"], "errors": errors,
            "rps": round(raw["requests"] / seconds_run, 1),
            **{f"{k}_ms": round(v / 1000, 3) for k, v in raw["latency_us"].items()},
            "command": " ".join(command)}


def fill_delta(data_dir: Path, users: int, events_per_user: int = 5, products: int = 1000) -> None:
    """Recent views for users ``0 .. users-1`` in the embedded delta store (the
    server's default backend), within the boost window and after the snapshot."""
    from lookup_server.delta import DeltaEvent
    from lookup_server.delta.factory import open_delta_store

    store = open_delta_store({}, data_dir)
    now = time.time()
    try:
        batch = []
        for user in range(users):
            for i in range(events_per_user):
                batch.append(DeltaEvent(user, (user * 31 + i * 7) % products, "view", now - 60 - i))
            if len(batch) >= 5000:
                store.add_events(batch)
                batch = []
        if batch:
            store.add_events(batch)
    finally:
        store.close()


def page_in(path: Path) -> float:
    """Read a file once so the runs that follow start from a warm page cache; seconds taken."""
    started = time.perf_counter()
    with open(path, "rb") as f:
        while f.read(16 << 20):
            pass
    return round(time.perf_counter() - started, 1)


def markdown(result: dict) -> str:
    rows = ["| scenario | connections | req/s | × floor | p50 ms | p99 ms | p99.9 ms | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for run in result["runs"]:
        ratio = run.get("ratio_to_floor")
        rows.append(f"| {run['scenario']} | {run['connections']} | {run['rps']:,.0f} | "
                    f"{'' if ratio is None else f'{ratio:.2f}'} | {run['p50_ms']:.2f} | {run['p99_ms']:.2f} | "
                    f"{run['p99_9_ms']:.2f} | {run['errors']} |")
    half = result["half_load"]
    summary = result["summary"]
    machine = result["environment"]["machine"]
    return "\n".join([
        "# Lookup serving: our server against the Flask floor",
        "",
        f"{result['setup']['users']:,} users × {len(result['setup']['algorithms'])} algorithms × "
        f"{result['setup']['list_length']} items, {result['setup']['products']:,} products; snapshot "
        f"{result['snapshot']['bytes'] / 2**30:.2f} GiB ({result['snapshot']['bytes_per_user']:,} bytes per user). "
        f"gunicorn with conf/gunicorn.conf.py ({result['setup']['workers']} sync workers), wrk on the same "
        f"{machine['cores']} cores, {result['setup']['seconds']:g} s per run. Load average at the start: "
        f"{machine['load_average']}.",
        "",
        *rows,
        "",
        f"- Throughput against the floor (best of each): known users {summary['ratio_known']:.2f}×, "
        f"with a delta {summary['ratio_delta']:.2f}×, unknown users {summary['ratio_unknown']:.2f}× "
        f"(target ≥ {TARGET_RATIO}×: {'met' if summary['ratio_met'] else 'not met'}).",
        f"- Paced at half the highest `known` throughput ({half['target_rps']:,.0f} req/s, "
        f"{half['connections']} connections): {half['rps']:,.0f} req/s served, p50 {half['p50_ms']:.2f} ms, "
        f"p99 {half['p99_ms']:.2f} ms, p99.9 {half['p99_9_ms']:.2f} ms "
        f"(target p99 ≤ {TARGET_P99_MS} ms: {'met' if half['p99_ms'] <= TARGET_P99_MS else 'not met'}).",
        *_reference_line(summary),
        *_floor_half_line(result.get("floor_half_load")),
        "- Worker memory after the runs (MB, RSS / PSS): "
        + ", ".join(f"{w.get('rss_mb')} / {w.get('pss_mb')}" for w in result["memory"]["workers"])
        + ". PSS splits the snapshot's shared pages between the workers that map them.",
        "",
        f"Command: `{result['environment']['command']}`; commit {result['environment']['git']['commit']}.",
        "",
    ])


def _reference_line(summary: dict) -> list[str]:
    """Where the gap to the floor goes: reading a list at all, then our handler's own work."""
    if "ratio_plain" not in summary:  # results written before the reference servers existed
        return []
    return [f"- Reference points on the same ids (best of each): a plain LMDB lookup (one list read, 20 items, "
            f"nothing else) {summary['ratio_plain']:.2f}× the floor; our server with the real-time delta "
            f"(and with it the bandit) off {summary['ratio_delta_off']:.2f}×; as shipped "
            f"{summary['ratio_known']:.2f}×."]


def _floor_half_line(floor_half: dict | None) -> list[str]:
    """The floor at the same pace: the tail a constant answer gets on the same cores."""
    if not floor_half:  # results written before this run existed
        return []
    return [f"- The floor paced at the same rate: {floor_half['rps']:,.0f} req/s served, "
            f"p50 {floor_half['p50_ms']:.2f} ms, p99 {floor_half['p99_ms']:.2f} ms, "
            f"p99.9 {floor_half['p99_9_ms']:.2f} ms."]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--list-length", type=int, default=100)
    parser.add_argument("--delta-users", type=int, default=20_000, help="users given recent events")
    parser.add_argument("--connections", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--seconds", type=float, default=15.0, help="per wrk run")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="gunicorn workers (LOOKUP_WORKERS)")
    parser.add_argument("--quick", action="store_true", help="100k users, 10k products, 4 s runs")
    parser.add_argument("--work-dir", type=Path, default=PROJECT_ROOT / "var" / "bench" / "serving",
                        help="snapshots are kept here and reused while their size matches")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results")
    parser.add_argument("--name", default="serving",
                        help="results go to <out>/<name>.json and .md (bench.growth reads every serving*.json)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.quick:
        args.users, args.products, args.seconds, args.delta_users = 100_000, 10_000, 4.0, 5_000
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (Debian: apt-get install wrk; `make system-packages` does it)")
    from bench.serving.synthetic import ALGORITHMS, write_snapshot

    # The record layout is in the name: a snapshot of an older layout is not reused.
    data_dir = args.work_dir / f"{args.users}u-{args.products}p-{args.list_length}-layout{LIST_LAYOUT_VERSION}"
    version = "bench"
    snapshot_info_path = data_dir / "snapshot-info.json"
    if snapshot_info_path.exists() and (data_dir / "snapshots" / version / "data.mdb").exists():
        snapshot_info = json.loads(snapshot_info_path.read_text())
        log.info("reusing the snapshot in %s", data_dir)
    else:
        shutil.rmtree(data_dir, ignore_errors=True)
        log.info("writing a snapshot of %d users and %d products to %s", args.users, args.products, data_dir)
        snapshot_info = write_snapshot(data_dir / "snapshots", version, args.users, args.products, args.list_length)
        snapshot_info_path.write_text(json.dumps(snapshot_info))
    shutil.rmtree(data_dir / "realtime", ignore_errors=True)  # counters and events of a former run
    fill_delta(data_dir, min(args.delta_users, args.users), products=args.products)
    log.info("snapshot paged in in %.1f s", page_in(data_dir / "snapshots" / version / "data.mdb"))

    common = {"LOOKUP_WORKERS": str(args.workers), "LOOKUP_LOG_LEVEL": "warning"}
    ours_env = {**common, "RECSYS_DATA_DIR": str(data_dir)}
    shipped = PROJECT_ROOT / "conf" / "gunicorn.conf.py"
    # Each server: its gunicorn config and environment. All run for the whole
    # benchmark (an idle one costs nothing) so the scenarios can alternate.
    servers = {"ours": (shipped, ours_env),
               "floor": (HERE / "gunicorn.reference.conf.py", {**common, "BENCH_APP": "floor_app"}),
               "plain": (HERE / "gunicorn.reference.conf.py",
                         {**common, "BENCH_APP": "plain_app",
                          "BENCH_SNAPSHOT": str(data_dir / "snapshots" / version)}),
               "delta_off": (shipped, {**ours_env, "RECSYS__SERVER__DELTA__ENABLED": "false"})}
    urls = {name: f"http://127.0.0.1:{free_port()}" for name in servers}
    known_ids = (0, args.users)
    # scenario -> (server, ids); the floor's runs come first at each connection count.
    scenarios = {"known": ("ours", known_ids), "delta": ("ours", (0, min(args.delta_users, args.users))),
                 "unknown": ("ours", (args.users + 1, args.users * 2 + 1)),
                 "plain": ("plain", known_ids), "delta_off": ("delta_off", known_ids)}
    runs: list[dict] = []
    env_info = environment("n/a")
    with contextlib.ExitStack() as stack:
        processes = {name: stack.enter_context(gunicorn(
            config, {**env, "LOOKUP_BIND": urls[name].removeprefix("http://")}, data_dir / f"{name}.log",
            urls[name], "/readyz", args.workers)) for name, (config, env) in servers.items()}
        for url in urls.values():  # warm-up: imports, first pages, connection set-up
            run_wrk(url, 8, 2, known_ids)
        ours, floor = urls["ours"], urls["floor"]
        for connections in args.connections:
            floor_run = {"scenario": "floor", **run_wrk(floor, connections, args.seconds, known_ids)}
            runs.append(floor_run)
            log.info("floor, %d connections: %.0f req/s, p99 %.2f ms", connections, floor_run["rps"],
                     floor_run["p99_ms"])
            for name, (server, id_range) in scenarios.items():
                run = {"scenario": name, **run_wrk(urls[server], connections, args.seconds, id_range)}
                run["ratio_to_floor"] = round(run["rps"] / floor_run["rps"], 3)
                runs.append(run)
                log.info("%s, %d connections: %.0f req/s (%.2f× floor), p99 %.2f ms", name, connections,
                         run["rps"], run["ratio_to_floor"], run["p99_ms"])
        best = {name: max(r["rps"] for r in runs if r["scenario"] == name) for name in ("floor", *scenarios)}
        half_connections = max(args.connections)
        half = run_wrk(ours, half_connections, args.seconds * 2, known_ids, rate=best["known"] / 2)
        half["target_rps"] = round(best["known"] / 2, 1)
        log.info("paced at %.0f req/s: %.0f served, p99 %.2f ms", half["target_rps"], half["rps"], half["p99_ms"])
        floor_half = run_wrk(floor, half_connections, args.seconds * 2, known_ids, rate=best["known"] / 2)
        floor_half["target_rps"] = half["target_rps"]
        log.info("floor paced at %.0f req/s: p99 %.2f ms", floor_half["target_rps"], floor_half["p99_ms"])
        memory = worker_memory(processes["ours"].pid)

    ratios = {name: round(best[name] / best["floor"], 3) for name in scenarios}
    served = {name: ratios[name] for name in TARGET_SCENARIOS}
    result = {
        "environment": env_info,
        "setup": {"users": args.users, "products": args.products, "list_length": args.list_length,
                  "algorithms": list(ALGORITHMS), "delta_users": min(args.delta_users, args.users),
                  "workers": args.workers, "seconds": args.seconds, "connections": args.connections},
        "snapshot": snapshot_info,
        "runs": runs,
        "half_load": half,
        "floor_half_load": floor_half,
        "memory": memory,
        "summary": {**{f"ratio_{k}": v for k, v in ratios.items()},
                    "ratio_met": min(served.values()) >= TARGET_RATIO,
                    "p99_at_half_load_ms": half["p99_ms"], "p99_met": half["p99_ms"] <= TARGET_P99_MS},
    }
    out = args.out if not args.quick or args.out != parser.get_default("out") else data_dir
    write_results(out, args.name, result, markdown(result))
    log.info("written %s and %s", out / f"{args.name}.json", out / f"{args.name}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
