"""What a ranked list's layout costs on the request path: ``unpack_ranked_list`` on a
layout-2 record (float16 scores times the list's scale) against the same list in
layout 1 (float32 scores, read as they are), alternating, in one process.

    python -m bench.serving.decode            # 100-item lists, k = 20 and 100
    python -m bench.serving.decode --quick    # fewer calls (a smoke run, into a temporary folder)

The lookup server decodes up to one list per algorithm it consults and per fallback,
inside the LMDB read transaction (a memoryview on the page, as here). Results:
``<out>/list_decode.{json,md}``.
"""
from __future__ import annotations

import argparse
import struct
import tempfile
import timeit
from pathlib import Path

from bench.quality.environment import environment, machine_line, write_results
from schemas.settings import PROJECT_ROOT
from schemas.snapshot import LAYOUT_VERSION, pack_ranked_list, unpack_ranked_list

NAME = "list_decode"
DEFAULT_OUT = PROJECT_ROOT / "bench" / "results"
QUICK_OUT = Path(tempfile.gettempdir()) / "bench-list-decode-quick"


def layout_1_record(ids: list[int], scores: list[float]) -> bytes:
    """The baseline: a ranked list as layout 1 stored it (what older snapshots hold)."""
    n = len(ids)
    return struct.pack(f"<BBH{n}I{n}f", LAYOUT_VERSION, 0, n, *ids, *scores)


def time_decode(record: bytes, k: int, calls: int, repeats: int) -> float:
    """Best of ``repeats`` runs of ``calls`` decodes, in microseconds per call."""
    view = memoryview(record)
    return min(timeit.repeat(lambda: unpack_ranked_list(view, k), number=calls, repeat=repeats)) / calls * 1e6


def run(items: int, ks: list[int], calls: int, rounds: int) -> list[dict]:
    ids = [(7919 * i) % 100_000 for i in range(items)]
    scores = [1.0 / (i + 1) for i in range(items)]
    records = {1: layout_1_record(ids, scores), 2: pack_ranked_list(ids, scores)}
    rows = []
    for k in ks:
        best = {1: float("inf"), 2: float("inf")}
        for _ in range(rounds):  # alternating, so drift in the machine's speed hits both alike
            for layout, record in records.items():
                best[layout] = min(best[layout], time_decode(record, k, calls, 3))
        rows.append({"items": items, "k": k, "layout_1_us": round(best[1], 3), "layout_2_us": round(best[2], 3),
                     "extra_us": round(best[2] - best[1], 3), "ratio": round(best[2] / best[1], 2),
                     "record_bytes": {1: len(records[1]), 2: len(records[2])}})
    return rows


def markdown(result: dict) -> str:
    lines = ["# Ranked list decode: layout 2 against layout 1", "",
             "`unpack_ranked_list` on a memoryview, best of alternating runs. Layout 2 stores float16 scores "
             "divided by the list's largest and multiplies them back; layout 1 stored float32.", "",
             "| items | k | layout 1 (µs) | layout 2 (µs) | extra per list (µs) | ratio | record bytes 1 / 2 |",
             "|---:|---:|---:|---:|---:|---:|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['items']} | {r['k']} | {r['layout_1_us']:.2f} | {r['layout_2_us']:.2f} "
                     f"| {r['extra_us']:+.2f} | {r['ratio']:.2f}x | {r['record_bytes'][1]} / {r['record_bytes'][2]} |")
    lines += ["", machine_line(result), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.serving.decode", description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=100, help="items per list (default 100, as the jobs write)")
    p.add_argument("--k", type=int, nargs="+", default=[20, 100], help="items decoded per call (default 20 100)")
    p.add_argument("--quick", action="store_true", help="fewer calls, results in a temporary folder")
    p.add_argument("--out", type=Path, default=None, help="results folder (default bench/results)")
    args = p.parse_args(argv)
    calls, rounds = (2_000, 2) if args.quick else (100_000, 5)
    result = {"benchmark": NAME, **environment("n/a"), "calls_per_run": calls, "rounds": rounds,
              "rows": run(args.items, args.k, calls, rounds)}
    write_results(args.out or (QUICK_OUT if args.quick else DEFAULT_OUT), NAME, result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
