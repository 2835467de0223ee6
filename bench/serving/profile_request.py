"""Lookup requests timed in process: µs per request and delta-store calls per request.

    python -m bench.serving.profile_request            # 100k users, 2,000 requests of each kind
    python -m bench.serving.profile_request --redis    # the delta in a throwaway redis-server
    python -m bench.serving.profile_request --help

No gunicorn and no wrk: the app runs in this process and requests go through Flask's
test client, so the figures are the server's own work per request (Flask included),
reproducible on a busy machine within a few per cent, and a minute or two long.

Steps: write (or reuse) the synthetic snapshot that ``python -m bench.serving --quick``
uses (``bench.serving.synthetic``), fill a fresh delta store (recent views for the
``delta`` users, catalog changes: deactivations of listed products and new products in
the snapshot's categories, trending events), warm everything once, then per kind:

- ``floor``: ``bench.serving.floor_app`` (a constant answer), the framework's own cost;
- ``known``: users with snapshot lists and no recent events;
- ``delta``: users with recent events to merge;
- ``unknown``: users the snapshot does not know (global list fused with trending);
- ``similar``: a product's similar products.

Each kind is timed without a profiler (best of ``--repeats`` passes over the same ids,
wall time and this process's CPU time: on a machine shared with other work the CPU
time is the steadier figure),
then run once more under cProfile to count, per request, the delta store's method calls
(one Redis round trip each) and the LMDB calls (``get``, transactions, cursor moves)
made by the delta store and by the snapshot reader.
"""
from __future__ import annotations

import argparse
import cProfile
import functools
import json
import logging
import pstats
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from schemas.settings import PROJECT_ROOT

log = logging.getLogger("bench.serving.profile")

KINDS = ("floor", "known", "delta", "unknown", "similar")
# The delta store's methods a lookup worker may call (each one round trip to Redis).
STORE_METHODS = ("recent_events", "catalog_status", "new_products", "trending", "record_served_many",
                 "bandit_counts", "pinned", "ping", "catalog_version", "catalog_view",
                 "recent_events_and_catalog_version")
# The LMDB calls counted, by the C method's name in cProfile's output.
LMDB_TYPES = ("of 'Transaction' objects>", "of 'Cursor' objects>", "of 'Environment' objects>")
LMDB_CALLS = ("get", "begin", "cursor", "set_range", "prev", "next", "first", "last", "iternext", "stat")


def snapshot_dir(work_dir: Path, users: int, products: int, list_length: int) -> Path:
    """The data dir of ``python -m bench.serving`` for this size, with its snapshot written if missing."""
    from bench.serving.synthetic import write_snapshot

    data_dir = work_dir / f"{users}u-{products}p-{list_length}"
    info = data_dir / "snapshot-info.json"
    if info.exists() and (data_dir / "snapshots" / "bench" / "data.mdb").exists():
        log.info("reusing the snapshot in %s", data_dir)
    else:
        shutil.rmtree(data_dir, ignore_errors=True)
        log.info("writing a snapshot of %d users and %d products to %s", users, products, data_dir)
        info.parent.mkdir(parents=True, exist_ok=True)
        result = write_snapshot(data_dir / "snapshots", "bench", users, products, list_length)
        info.write_text(json.dumps(result))
    return data_dir


def fill_delta(store, users: int, products: int, delta_users: int, deactivated: int, new_products: int,
               seed: int = 7) -> None:
    """Recent views for users ``0 .. delta_users-1``; ``deactivated`` of the most listed
    products (the low ids: ``synthetic`` skews lists towards them) turned off;
    ``new_products`` new ids listed in the snapshot's categories; trending views."""
    from bench.serving.synthetic import CATEGORIES
    from lookup_server.delta import CatalogChange, DeltaEvent

    rng = random.Random(seed)
    now = time.time()
    batch = []
    for user in range(delta_users):
        batch += [DeltaEvent(user, (user * 31 + i * 7) % products, "view", now - 60 - i) for i in range(5)]
        if len(batch) >= 5000:
            store.add_events(batch)
            batch = []
    store.add_events(batch)
    # Trending: views by users the snapshot does not know (they stay "unknown" only if
    # they are not among the profiled unknown users: those start at users + 1).
    store.add_events([DeltaEvent(users * 10 + i, rng.randrange(products), "view", now - rng.random() * 3600)
                      for i in range(2000)])
    changes = [CatalogChange(p, False, None, now - 120) for p in rng.sample(range(min(products, 2000)), deactivated)]
    changes += [CatalogChange(products + i, True, f"c{rng.randrange(CATEGORIES)}", now - 100 + i * 0.01)
                for i in range(new_products)]
    store.apply_catalog(changes)


def count_store_calls(store, counts: Counter) -> None:
    """Wrap the store's methods on the instance so each call adds one to ``counts``."""
    for name in STORE_METHODS:
        method = getattr(type(store), name, None)
        if method is None:
            continue

        def counted(*args, _name=name, _bound=getattr(store, name), **kwargs):
            counts[_name] += 1
            return _bound(*args, **kwargs)
        setattr(store, name, functools.wraps(method)(counted))


def lmdb_calls(profile: cProfile.Profile) -> dict[str, Counter]:
    """LMDB method calls by who made them: ``delta`` (lookup_server/delta/) or ``snapshot``."""
    found = {"delta": Counter(), "snapshot": Counter()}
    for (file, _, name), (_, _, _, _, callers) in pstats.Stats(profile).stats.items():
        if file != "~" or not name.endswith(LMDB_TYPES):
            continue
        method = name.split("'")[1] if "'" in name else name
        if method not in LMDB_CALLS:
            continue
        for (caller_file, _, _), caller_stats in callers.items():
            if "lookup_server/delta/" in caller_file:
                found["delta"][method] += caller_stats[1]
            elif "snapshot_reader" in caller_file:
                found["snapshot"][method] += caller_stats[1]
    return found


def time_requests(client, paths: list[str], repeats: int) -> tuple[float, float, float]:
    """µs per request over ``repeats`` passes: best and median wall time, best CPU time
    of this process (on a shared machine the steadier one: it leaves out the time other
    processes had the core, and also the time spent waiting for Redis); every answer must be 200."""
    wall, cpu = [], []
    for _ in range(repeats):
        started, started_cpu = time.perf_counter(), time.process_time()
        for path in paths:
            response = client.get(path)
            if response.status_code != 200:
                raise RuntimeError(f"{path}: {response.status_code} {response.get_data(as_text=True)[:200]}")
        cpu.append((time.process_time() - started_cpu) / len(paths) * 1e6)
        wall.append((time.perf_counter() - started) / len(paths) * 1e6)
    return min(wall), statistics.median(wall), min(cpu)


def table(results: dict) -> str:
    """The figures as aligned text: wall and CPU time (and the floor's CPU time over it:
    the throughput ratio a CPU-bound worker would reach), store calls (Redis round
    trips), LMDB calls."""
    lines = [f"{'kind':8} {'µs/req':>7} {'median':>7} {'cpu µs':>7} {'× floor':>7} {'store calls':>11} {'delta txns':>10} "
             f"{'delta gets':>10} {'delta ops':>9} {'snap gets':>9}  store calls by method"]
    floor = results.get("floor", {}).get("cpu_us_per_request")
    for kind, r in results.items():
        delta = r["lmdb_delta"]
        ratio = f"{floor / r['cpu_us_per_request']:7.2f}" if floor else f"{'':7}"
        lines.append(f"{kind:8} {r['us_per_request']:7.0f} {r['us_median_pass']:7.0f} {r['cpu_us_per_request']:7.0f} "
                     f"{ratio} {r['store_calls_total']:11.2f} "
                     f"{delta.get('begin', 0):10.2f} {delta.get('get', 0):10.2f} {sum(delta.values()):9.2f} "
                     f"{r['lmdb_snapshot'].get('get', 0):9.2f}  "
                     + ", ".join(f"{k} {v:g}" for k, v in r["store_calls"].items()))
    return "\n".join(lines)


def start_redis(folder: Path) -> tuple[subprocess.Popen, str]:
    executable = shutil.which("redis-server")
    if executable is None:
        raise SystemExit("redis-server is not on PATH")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(folder)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return process, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("redis-server did not start")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--products", type=int, default=10_000)
    parser.add_argument("--list-length", type=int, default=100)
    parser.add_argument("--requests", type=int, default=2000, help="distinct ids per kind")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per kind (best is reported)")
    parser.add_argument("--delta-users", type=int, default=5000, help="users given recent events")
    parser.add_argument("--deactivated", type=int, default=300, help="listed products deactivated in the delta")
    parser.add_argument("--new-products", type=int, default=200, help="new products in the delta")
    parser.add_argument("--redis", action="store_true", help="the delta in a throwaway redis-server")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--work-dir", type=Path, default=PROJECT_ROOT / "var" / "bench" / "serving",
                        help="where python -m bench.serving keeps its snapshots (reused)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--pstats", type=int, default=0, metavar="N",
                        help="also print each kind's top N functions under cProfile")
    parser.add_argument("--pstats-sort", default="tottime", choices=("tottime", "cumtime", "ncalls"),
                        help="the order of --pstats")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("lookup_server").setLevel(logging.WARNING)

    from bench.serving.floor_app import create_app as create_floor
    from lookup_server import app_state, create_app

    data_dir = snapshot_dir(args.work_dir, args.users, args.products, args.list_length)
    scratch = Path(tempfile.mkdtemp(prefix="profile-request-"))
    redis_process = None
    try:
        delta_conf: dict = {"path": str(scratch / "realtime")}  # not the benchmark's own delta
        if args.redis:
            redis_process, url = start_redis(scratch)
            delta_conf = {"redis_url": url, "key_prefix": "profile:", "timeout_ms": 1000}
        app = create_app({"data_dir": str(data_dir), "delta": delta_conf})
        app_state(app).snapshot.refresh()
        context = app_state(app).delta.context()
        fill_delta(context.store, args.users, args.products, args.delta_users, args.deactivated,
                   args.new_products)
        reload_ms = None
        if hasattr(context.store, "catalog_view"):  # what one reload of a worker's catalog copy costs
            started = time.perf_counter()
            for _ in range(5):
                view = context.store.catalog_view(1 << 30)
            reload_ms = ((time.perf_counter() - started) / 5 * 1000, len(view))
        calls: Counter = Counter()
        count_store_calls(context.store, calls)
        rng = random.Random(1)
        ids = {
            "floor": rng.sample(range(args.users), args.requests),
            "known": rng.sample(range(args.delta_users, args.users), args.requests),
            "delta": rng.sample(range(args.delta_users), min(args.requests, args.delta_users)),
            "unknown": rng.sample(range(args.users + 1, args.users * 2), args.requests),
            "similar": [rng.randrange(args.products) for _ in range(args.requests)],
        }
        user_path, similar_path = "/v1/users/{}/recommendations?k=20", "/v1/products/{}/similar?k=20"
        clients = {"floor": create_floor().test_client(), "ours": app.test_client()}
        results = {}
        for kind in args.kinds:
            client = clients["floor" if kind == "floor" else "ours"]
            paths = [(similar_path if kind == "similar" else user_path).format(i) for i in ids[kind]]
            for path in paths:  # warm: page cache, trending and bandit copies, catalog caches
                client.get(path)
            best, median, cpu = time_requests(client, paths, args.repeats)
            calls.clear()
            profile = cProfile.Profile()
            profile.enable()
            for path in paths:
                client.get(path)
            profile.disable()
            by_caller = lmdb_calls(profile)
            if args.pstats:
                print(f"\n--- {kind}: {len(paths)} requests under cProfile, by {args.pstats_sort}")
                pstats.Stats(profile).sort_stats(args.pstats_sort).print_stats(args.pstats)
            n = len(paths)
            results[kind] = {
                "requests": n, "us_per_request": round(best, 1), "us_median_pass": round(median, 1),
                "cpu_us_per_request": round(cpu, 1),
                "store_calls": {k: round(v / n, 2) for k, v in sorted(calls.items()) if v},
                "store_calls_total": round(sum(calls.values()) / n, 2),
                "lmdb_delta": {k: round(v / n, 2) for k, v in sorted(by_caller["delta"].items())},
                "lmdb_snapshot": {k: round(v / n, 2) for k, v in sorted(by_caller["snapshot"].items())},
            }
            log.info("%s done", kind)
        app_state(app).snapshot.close()
    finally:
        if redis_process is not None:
            redis_process.kill()
            redis_process.wait()
        shutil.rmtree(scratch, ignore_errors=True)

    backend = "redis" if args.redis else "lmdb"
    print(f"\n{args.users:,} users, {args.products:,} products, delta: {backend}; "
          f"{args.requests} ids per kind, best of {args.repeats} passes (Flask test client, in process)\n")
    print(table(results))
    if reload_ms is not None:
        print(f"\none catalog_view (a worker's reload after a catalog change): {reload_ms[0]:.2f} ms "
              f"for {reload_ms[1]} changed products")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "backend": backend, "results": results,
                                         "catalog_view_ms": reload_ms and round(reload_ms[0], 3)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
