"""How cost grows with scale: the pipeline's time and memory against events
(``bench/results/pipeline.json``), lookup latency against snapshot users
(``bench/results/serving*.json``, one per snapshot size, or the serving results given;
serving is not re-run here).

    python -m bench.growth                      # reads bench/results, writes the PNGs and growth.md there
    python -m bench.growth --serving a.json b.json --out somewhere/
    python -m bench.growth --help

Growth is stated as the exponent b of a least-squares fit of log(cost) = a + b log(size):
b = 1 is linear, b < 1 means a fixed cost still weighs at the small sizes, b > 1 is
worse than linear. Two points give a slope, not a fit: the text says how many there were.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

from schemas.settings import PROJECT_ROOT

log = logging.getLogger("bench.growth")

DEFAULT_OUT = PROJECT_ROOT / "bench" / "results"
PIPELINE_PNG, MEMORY_PNG, SERVING_PNG = "growth_pipeline.png", "growth_memory.png", "growth_serving.png"
MEMORY_ROLES = ("driver_jvm", "driver_python", "python_workers")


def fit_exponent(sizes: list[float], costs: list[float]) -> float | None:
    """Slope of log(cost) on log(size) by least squares; None without two distinct
    positive sizes (or with a cost that is not positive)."""
    points = [(math.log(s), math.log(c)) for s, c in zip(sizes, costs) if s > 0 and c > 0]
    if len(points) < len(sizes) or len({x for x, _ in points}) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


def describe(exponent: float | None) -> str:
    if exponent is None:
        return "not enough points"
    if abs(exponent) < 0.15:
        return "flat (about the same at every size)"
    if exponent < 0.85:
        return "sub-linear (fixed costs still weigh)"
    if exponent <= 1.15:
        return "about linear"
    return "super-linear"


# --- reading the results ------------------------------------------------------------

def stage_series(result: dict) -> dict[str, list[tuple[int, float]]]:
    """Stage -> [(events, seconds)] over the scales where that stage finished ok, plus
    ``pipeline`` (the sum of the stages) over the complete scales."""
    series: dict[str, list[tuple[int, float]]] = {}
    for entry in result.get("scales", {}).values():
        events = entry["shape"]["events"]
        for stage in entry.get("stages", []):
            if stage.get("status") == "ok":
                series.setdefault(stage["stage"], []).append((events, stage["seconds"]))
        if entry.get("status") == "complete":
            series.setdefault("pipeline", []).append((events, entry["pipeline_seconds"]))
    return {name: sorted(points) for name, points in series.items()}


def memory_series(result: dict) -> dict[str, list[tuple[int, float]]]:
    """Role -> [(events, highest peak RSS MB over the stages that ran)]."""
    series: dict[str, list[tuple[int, float]]] = {}
    for entry in result.get("scales", {}).values():
        ran = [s for s in entry.get("stages", []) if "peak_rss_mb" in s]
        for role in MEMORY_ROLES:
            peaks = [s["peak_rss_mb"].get(role, 0) for s in ran]
            if peaks:
                series.setdefault(role, []).append((entry["shape"]["events"], max(peaks)))
    return {name: sorted(points) for name, points in series.items()}


def serving_points(documents: list[dict]) -> list[dict]:
    """Per serving result (one snapshot size each): users, the known users' p50 and p99
    at the fewest connections, and p99 of the paced run at half the peak throughput."""
    points = []
    for doc in documents:
        known = sorted((r for r in doc.get("runs", []) if r.get("scenario") == "known"),
                       key=lambda r: r["connections"])
        if not known:
            continue
        half = doc.get("half_load") or {}
        points.append({"users": doc["setup"]["users"], "connections": known[0]["connections"],
                       "p50_ms": known[0]["p50_ms"], "p99_ms": known[0]["p99_ms"],
                       "half_load_p99_ms": half.get("p99_ms"), "peak_rps": max(r["rps"] for r in known),
                       "date": doc.get("environment", {}).get("date")})
    return sorted(points, key=lambda p: p["users"])


# --- plots -----------------------------------------------------------------------------

def _axes(title: str, xlabel: str, ylabel: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    ax.set(xscale="log", yscale="log", title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, which="both", alpha=0.3)
    return fig, ax


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_series(series: dict[str, list[tuple[int, float]]], path: Path, title: str, xlabel: str, ylabel: str,
                target: float | None = None) -> None:
    fig, ax = _axes(title, xlabel, ylabel)
    for name, points in series.items():
        exponent = fit_exponent([x for x, _ in points], [y for _, y in points])
        suffix = f" (b={exponent:.2f})" if exponent is not None else ""
        ax.plot([x for x, _ in points], [y for _, y in points], "o-",
                lw=2.5 if name == "pipeline" else 1.2, label=name + suffix)
    if target:
        ax.axhline(target, color="red", ls="--", lw=1, label=f"target {target:g} s (whole pipeline)")
    if series or target:  # an empty plot has nothing to label
        ax.legend(fontsize=8)
    _save(fig, path)


def plot_serving(points: list[dict], path: Path) -> None:
    fig, ax = _axes("Lookup latency against snapshot size (known users)", "users in the snapshot",
                    "latency (ms)")
    users = [p["users"] for p in points]
    for key, label in (("p50_ms", "p50, fewest connections"), ("p99_ms", "p99, fewest connections"),
                       ("half_load_p99_ms", "p99 at half the peak throughput")):
        ax.plot(users, [p[key] for p in points], "o-", label=label)
    ax.legend(fontsize=8)
    _save(fig, path)


# --- text ----------------------------------------------------------------------------------

def _fit_line(name: str, points: list, unit: str) -> str:
    exponent = fit_exponent([x for x, _ in points], [y for _, y in points])
    shown = ", ".join(f"{x:,}: {y:,.1f}" for x, y in points)
    b = f"{exponent:.2f}" if exponent is not None else "n/a"
    return f"| {name} | {len(points)} | {b} | {describe(exponent)} | {shown} {unit} |"


def growth_markdown(result: dict, serving: list[dict]) -> str:
    lines = ["## How cost grows", "",
             "Exponent b of `cost ~ size^b` (least squares on logs). Sizes: events for the pipeline, "
             "users in the snapshot for the lookups.", "",
             "| cost | points | b | growth | measured |", "|---|---|---|---|---|"]
    for name, points in stage_series(result).items():
        lines.append(_fit_line(f"{name} time", points, "s"))
    for name, points in memory_series(result).items():
        lines.append(_fit_line(f"peak RSS {name}", points, "MB"))
    for key in ("p50_ms", "half_load_p99_ms"):
        points = [(p["users"], p[key]) for p in serving if p.get(key)]
        if points:
            lines.append(_fit_line(f"lookup {key[:-3]}", points, "ms"))
    lines.append("")
    sizes = [f"{p['users']:,}" for p in serving]
    if len(serving) < 2:
        lines += [f"Lookup latency: serving results for {len(serving)} snapshot size(s) ({', '.join(sizes) or 'none'}"
                  f" users); `make bench-serving` also measures 100k and 5M users (serving_100k.json, "
                  "serving_5M.json), or give other results with `python -m bench.growth --serving ...`.", ""]
    lines += [f"Plots: `{PIPELINE_PNG}` (time per stage), `{MEMORY_PNG}` (peak RSS), `{SERVING_PNG}` (lookups).", ""]
    return "\n".join(lines)


def serving_results(folder: Path) -> list[Path]:
    """``bench.serving``'s results in ``folder``: ``serving.json`` and the other sizes'
    ``serving_*.json`` (``make bench-serving`` writes three)."""
    return sorted(folder.glob("serving*.json"))


def write_all(out: Path, serving_paths: list[Path] | None = None, results: Path | None = None) -> str:
    """Write the PNGs and growth.md into ``out``; return the Markdown."""
    results = results or out / "pipeline.json"
    result = json.loads(results.read_text()) if results.exists() else {"scales": {}}
    paths = serving_paths if serving_paths is not None else serving_results(out)
    serving = serving_points([json.loads(p.read_text()) for p in paths])
    target = result.get("rules", {}).get("target_seconds")
    plot_series(stage_series(result), out / PIPELINE_PNG, "Nightly pipeline: time per stage (2 cores)",
                "events", "seconds", target)
    plot_series(memory_series(result), out / MEMORY_PNG, "Nightly pipeline: highest peak RSS over the stages",
                "events", "MB")
    if serving:
        plot_serving(serving, out / SERVING_PNG)
    text = growth_markdown(result, serving)
    (out / "growth.md").write_text("# Growth\n\n" + text)
    log.info("written %s, %s%s and growth.md in %s", PIPELINE_PNG, MEMORY_PNG,
             f", {SERVING_PNG}" if serving else "", out)
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.growth", description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, default=None, help="pipeline results (default <out>/pipeline.json)")
    p.add_argument("--serving", type=Path, nargs="*", default=None,
                   help="serving results, one per snapshot size (default <out>/serving*.json)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the PNGs and growth.md go (default bench/results)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(write_all(args.out, args.serving, args.results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
