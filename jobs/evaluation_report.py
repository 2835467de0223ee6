"""The human report of one offline evaluation run: a folder with ``report.html`` and PNGs.

The ``evaluations`` Delta table answers questions one query at a time; the nightly
review needs the whole picture at a glance. The report shows, for one run:

* ``metric_by_algorithm.png``: the ranking metrics at the headline k (10, else the
  largest k evaluated) plus MRR, all users, one bar per algorithm;
* ``by_segment.png``: NDCG at the headline k per user segment (new / light / heavy /
  all) with each segment's user count, since a method can win overall and lose on
  new users;
* ``by_k.png``: NDCG@k and Recall@k against k, to see whether a ranking holds at
  every list length;
* ``tuning.png`` and a trials table, when hyper-parameter trials are given;
* ``importance.png`` and a table: the learned ranker's features by their share of
  the total gain, when a ranker was trained;
* a table of every metric (rows algorithm x segment), best ``all`` value bolded.

The folder is self-contained (relative image links, inline CSS, no JavaScript) so it
can be copied, archived or served as static files. It is written to a temporary
sibling and swapped in, so readers never see a half-written report.

Pure pandas + matplotlib (object API, Agg canvas): no pyspark, no pyplot global state.
"""
from __future__ import annotations

import html
import json
import logging
import math
import os
import shutil
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from schemas.tables import EVALUATIONS

log = logging.getLogger(__name__)

ALGORITHM_ORDER = ("global_popular", "popular", "als", "ease", "content", "hybrid", "ranked")
IMPORTANCE_SHOWN = 20  # features in the importance plot; the table lists every one
SEGMENT_ORDER = ("new", "light", "heavy", "all")
# Metrics cut at k that the bar and line plots compare; the rest only go to the table.
RANKING_METRICS = ("ndcg", "recall", "hit_rate", "map", "map_all", "precision")
# fallback_share is the share of users served the global list instead of their own:
# less is better. Every other metric is better when higher.
LOWER_IS_BETTER = frozenset({"fallback_share"})
# Only the required columns: the optional tuning columns (trial, params) are absent
# from plain evaluation runs.
RESULT_COLUMNS = tuple(f.name for f in EVALUATIONS.fields if f.required)
TRIAL_COLUMNS = ("trial", "algorithm", "params", "score", "seconds")
DASH = "\u2013"

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { margin-bottom: .2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 90%; }
th, td { border: 1px solid #ccc; padding: .25em .6em; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.all td { background: #fafaf0; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: .2em 1em; }
dl.meta dt { font-weight: bold; }
dl.meta dd { margin: 0; }
img { max-width: 100%; display: block; margin: 1em 0; }
"""


# --- public API ----------------------------------------------------------------

def write_report(results: pd.DataFrame, out_dir: Path, *, trials: pd.DataFrame | None = None,
                 title: str = "Offline evaluation", notes: dict[str, str] | None = None,
                 importance: dict[str, float] | None = None) -> Path:
    """Write out_dir/report.html plus its PNGs; return the html path. ``importance``:
    the ranker's total gain per feature."""
    _check_results(results)
    if trials is not None:
        _check_trials(trials)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)  # leftover of a crashed run with our pid
    tmp.mkdir()
    try:
        shares = _gain_shares(importance or {})
        images = _write_plots(results, trials, tmp, shares)
        page = _render_html(results, trials, images, title, notes or {}, shares)
        (tmp / "report.html").write_text(page, encoding="utf-8")
        _swap_in(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    path = out_dir / "report.html"
    log.info("evaluation report written to %s", path)
    return path


# --- validation ----------------------------------------------------------------

def _check_results(results: pd.DataFrame) -> None:
    missing = [c for c in RESULT_COLUMNS if c not in results.columns]
    if missing:
        raise ValueError(f"evaluation results lack columns {missing}")
    if results.empty:
        raise ValueError("evaluation results are empty: nothing to report")
    run_ids = results["run_id"].drop_duplicates().tolist()
    if len(run_ids) > 1:
        raise ValueError(f"a report covers one run; results hold {len(run_ids)} run_ids: {run_ids}")
    dupes = results.duplicated(["algorithm", "segment", "metric"])
    if dupes.any():
        first = results.loc[dupes, ["algorithm", "segment", "metric"]].iloc[0].tolist()
        raise ValueError(f"evaluation results hold several rows for (algorithm, segment, metric) {first}; "
                         "tuning rows go in `trials`, not `results`")


def _check_trials(trials: pd.DataFrame) -> None:
    missing = [c for c in TRIAL_COLUMNS if c not in trials.columns]
    if missing:
        raise ValueError(f"trials lack columns {missing}")


# --- ordering and formatting ---------------------------------------------------

def _ordered(values, preferred: tuple[str, ...]) -> list[str]:
    """Known names in their usual order, unknown ones after, alphabetically."""
    present = set(values)
    known = [v for v in preferred if v in present]
    return known + sorted(present - set(preferred))


def _split_metric(metric: str) -> tuple[str, int | None]:
    """'ndcg@10' -> ('ndcg', 10); 'mrr' -> ('mrr', None)."""
    name, sep, k = metric.partition("@")
    return (name, int(k)) if sep and k.isdigit() else (metric, None)


def _metric_sort_key(metric: str) -> tuple[str, int]:
    name, k = _split_metric(metric)
    return name, -1 if k is None else k


def _headline_k(metrics) -> int | None:
    """10 when evaluated (the number the policy uses), else the largest k present."""
    ks = {k for name, k in map(_split_metric, metrics) if name in RANKING_METRICS and k is not None}
    if not ks:
        return None
    return 10 if 10 in ks else max(ks)


def _fmt(value) -> str:
    return DASH if value is None or pd.isna(value) else f"{float(value):.4g}"


def _fmt_time(value) -> str:
    return DASH if value is None or pd.isna(value) else pd.Timestamp(value).isoformat()


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _colors(algorithms: list[str]) -> dict[str, str]:
    # Same colour for an algorithm in every plot, so the legends read alike.
    return {a: f"C{i % 10}" for i, a in enumerate(algorithms)}


# --- plots ---------------------------------------------------------------------

def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, folder: Path, name: str) -> str:
    fig.savefig(folder / name, dpi=100)
    return name


def _gain_shares(importance: dict[str, float]) -> pd.Series:
    """Each feature's share of the total gain, largest first."""
    gains = pd.Series(importance, dtype="float64")
    total = gains.sum()
    return (gains / total if total > 0 else gains).sort_values(ascending=False, kind="stable")


def _write_plots(results: pd.DataFrame, trials: pd.DataFrame | None, folder: Path,
                 shares: pd.Series) -> dict[str, str]:
    """Draw every plot the data allows; return {file name: alt text}."""
    algorithms = _ordered(results["algorithm"], ALGORITHM_ORDER)
    tuned = [] if trials is None else list(trials["algorithm"])
    colors = _colors(_ordered([*results["algorithm"], *tuned], ALGORITHM_ORDER))
    k = _headline_k(results["metric"])
    values = results.set_index(["algorithm", "segment", "metric"])["value"]
    images = {}
    plots = (
        ("metric_by_algorithm.png", f"Ranking metrics at k={k} and MRR per algorithm, all users",
         lambda: _plot_metric_by_algorithm(values, algorithms, colors, k)),
        ("by_segment.png", f"NDCG@{k} per user segment and algorithm",
         lambda: _plot_by_segment(results, algorithms, colors, k)),
        ("by_k.png", "NDCG@k and Recall@k against k per algorithm, all users",
         lambda: _plot_by_k(values, algorithms, colors)),
    )
    if trials is not None and not trials.empty:
        plots += (("tuning.png", "Validation score per tuning trial and best so far, best trial per algorithm marked",
                   lambda: _plot_tuning(trials, colors)),)
    if not shares.empty:
        plots += (("importance.png", f"The ranker's {min(len(shares), IMPORTANCE_SHOWN)} most useful features "
                   "by share of total gain", lambda: _plot_importance(shares)),)
    for name, alt, draw in plots:
        fig = draw()
        if fig is not None:
            images[_save(fig, folder, name)] = alt
    return images


def _plot_metric_by_algorithm(values: pd.Series, algorithms, colors, k) -> Figure | None:
    present = set(values.index.get_level_values("metric"))
    metrics = [f"{name}@{k}" for name in RANKING_METRICS if f"{name}@{k}" in present]
    metrics += ["mrr"] if "mrr" in present else []
    if not metrics:
        return None
    fig = _new_figure(max(6.0, 1.3 * len(metrics) + 2), 4.5)
    ax = fig.add_subplot()
    width = 0.8 / len(algorithms)
    for i, alg in enumerate(algorithms):
        heights = [values.get((alg, "all", m), math.nan) for m in metrics]
        xs = [j + (i - (len(algorithms) - 1) / 2) * width for j in range(len(metrics))]
        ax.bar(xs, heights, width, label=alg, color=colors[alg])
    ax.set_xticks(range(len(metrics)), metrics)
    ax.set_ylabel("value (all users)")
    ax.set_title(f"Ranking metrics at k={k}, all users")
    ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    return fig


def _plot_by_segment(results: pd.DataFrame, algorithms, colors, k) -> Figure | None:
    rows = results[results["metric"] == f"ndcg@{k}"]
    if rows.empty:
        return None
    segments = _ordered(rows["segment"], SEGMENT_ORDER)
    users = results.groupby("segment")["users"].max()
    values = rows.set_index(["algorithm", "segment"])["value"]
    fig = _new_figure(max(6.0, 1.5 * len(segments) + 2), 4.5)
    ax = fig.add_subplot()
    width = 0.8 / len(algorithms)
    for i, alg in enumerate(algorithms):
        heights = [values.get((alg, s), math.nan) for s in segments]
        xs = [j + (i - (len(algorithms) - 1) / 2) * width for j in range(len(segments))]
        ax.bar(xs, heights, width, label=alg, color=colors[alg])
    labels = [f"{s}\n({_fmt_count(users.get(s))} users)" for s in segments]
    ax.set_xticks(range(len(segments)), labels)
    ax.set_ylabel(f"NDCG@{k}")
    ax.set_title(f"NDCG@{k} by user segment")
    ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    return fig


def _fmt_count(value) -> str:
    return DASH if value is None or pd.isna(value) else f"{int(value):,}"


def _curve(everyone: pd.Series, algorithm: str, name: str) -> list[tuple[int, float]]:
    """(k, value) points of one metric for one algorithm, by k."""
    points = []
    for (alg, metric), value in everyone.items():
        metric_name, k = _split_metric(metric)
        if alg == algorithm and metric_name == name and k is not None:
            points.append((k, value))
    return sorted(points)


def _plot_by_k(values: pd.Series, algorithms, colors) -> Figure | None:
    if "all" not in values.index.get_level_values("segment"):
        return None
    everyone = values.xs("all", level="segment")
    fig = _new_figure(10.0, 4.0)
    drew = False
    for ax, name, label in zip(fig.subplots(1, 2), ("ndcg", "recall"), ("NDCG@k", "Recall@k")):
        for alg in algorithms:
            points = _curve(everyone, alg, name)
            if points:
                drew = True
                ks, ys = zip(*points)
                ax.plot(ks, ys, marker="o", label=alg, color=colors[alg])
        ax.set_xlabel("k")
        ax.set_ylabel(label)
        ax.set_title(f"{label}, all users")
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "not evaluated", ha="center", va="center", transform=ax.transAxes)
    return fig if drew else None


def _plot_tuning(trials: pd.DataFrame, colors) -> Figure:
    fig = _new_figure(8.0, 4.5)
    ax = fig.add_subplot()
    for alg in _ordered(trials["algorithm"], ALGORITHM_ORDER):
        rows = trials[trials["algorithm"] == alg].sort_values("trial")
        ax.plot(rows["trial"], rows["score"], marker="o", linestyle=":", alpha=0.7, label=alg,
                color=colors[alg])
        # The search's progress: the best score so far, by trial.
        ax.plot(rows["trial"], rows["score"].cummax(), drawstyle="steps-post", linestyle="-", color=colors[alg])
        scored = rows.dropna(subset=["score"])
        if not scored.empty:
            best = scored.loc[scored["score"].idxmax()]
            ax.scatter([best["trial"]], [best["score"]], s=220, marker="*", color=colors[alg],
                       edgecolors="black", zorder=3)
            ax.annotate(_fmt(best["score"]), (best["trial"], best["score"]), textcoords="offset points",
                        xytext=(6, 6), fontsize="small")
    ax.margins(x=0.08, y=0.1)  # room for the best-score labels
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel("validation score (higher is better)")
    ax.set_title("Tuning trials (dots: each trial; line: best so far; star: best per algorithm)")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return fig


def _plot_importance(shares: pd.Series) -> Figure:
    shown = shares.head(IMPORTANCE_SHOWN)[::-1]  # the largest at the top
    fig = _new_figure(8.0, 0.8 + 0.28 * len(shown))
    ax = fig.add_subplot()
    ax.barh(list(shown.index), list(shown.values), color="#4c72b0")
    ax.set_xlabel("share of total gain")
    ax.set_title("Learned ranker: feature importance (gain)")
    ax.grid(axis="x", alpha=0.3)
    return fig


# --- html ----------------------------------------------------------------------

def _render_html(results, trials, images: dict[str, str], title: str, notes: dict[str, str],
                 shares: pd.Series) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_esc(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
        _header_block(results, notes),
        "<h2>Plots</h2>",
        *(f'<img src="{_esc(name)}" alt="{_esc(alt)}">' for name, alt in images.items()),
        "<h2>All metrics</h2>",
        f"<p>Bold: the best value of each column among the <code>all</code> rows "
        f"(lowest for {_esc(', '.join(sorted(LOWER_IS_BETTER)))}, highest otherwise). "
        f"{DASH}: not measured (no users in the segment).</p>",
        _metrics_table(results),
    ]
    if trials is not None:
        parts += ["<h2>Tuning trials</h2>", _trials_table(trials)]
    if not shares.empty:
        rows = "".join(f'<tr><td>{_esc(name)}</td><td class="num">{share:.4f}</td></tr>'
                       for name, share in shares.items())
        parts += ["<h2>Ranker feature importance</h2>",
                  f"<table><thead><tr><th>feature</th><th>share of gain</th></tr></thead><tbody>{rows}</tbody></table>"]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _header_block(results: pd.DataFrame, notes: dict[str, str]) -> str:
    first = results.iloc[0]
    items = [("run_id", first["run_id"]), ("split", first["split"]),
             ("as_of", _fmt_time(first["as_of"])), ("evaluated_at", _fmt_time(results["evaluated_at"].max()))]
    items += list(notes.items())
    rows = "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in items)
    return f'<dl class="meta">{rows}</dl>'


def _best_per_column(table: pd.DataFrame) -> dict[str, float]:
    """Per metric, the best value among the segment=all rows (NaN-free columns only)."""
    if "all" not in table.index.get_level_values("segment"):
        return {}
    everyone = table.xs("all", level="segment")
    best = {}
    for metric in table.columns:
        column = everyone[metric].dropna()
        if not column.empty:
            lower = _split_metric(metric)[0] in LOWER_IS_BETTER
            best[metric] = column.min() if lower else column.max()
    return best


def _metrics_table(results: pd.DataFrame) -> str:
    metrics = sorted(results["metric"].unique(), key=_metric_sort_key)
    table = results.set_index(["segment", "algorithm", "metric"])["value"].unstack("metric")[metrics]
    users = results.groupby(["segment", "algorithm"])["users"].max()
    best = _best_per_column(table)
    # 'all' first: it is the headline and the rows the bold marks compare.
    segments = ["all"] + [s for s in _ordered(results["segment"], SEGMENT_ORDER) if s != "all"]
    segments = [s for s in segments if s in set(results["segment"])]
    algorithms = _ordered(results["algorithm"], ALGORITHM_ORDER)
    head = "".join(f"<th>{_esc(m)}</th>" for m in ["segment", "users", "algorithm", *metrics])
    body = []
    for seg in segments:
        for alg in algorithms:
            if (seg, alg) not in table.index:
                continue
            cells = [_metric_cell(table.at[(seg, alg), m], best.get(m) if seg == "all" else None)
                     for m in metrics]
            body.append(f'<tr class="{_esc(seg)}"><td>{_esc(seg)}</td>'
                        f'<td class="num">{_fmt_count(users.get((seg, alg)))}</td>'
                        f"<td>{_esc(alg)}</td>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _metric_cell(value, best) -> str:
    text = _fmt(value)
    if best is not None and not pd.isna(value) and value == best:
        return f'<td class="num best"><b>{text}</b></td>'
    return f'<td class="num">{text}</td>'


def _params_text(params) -> str:
    """Params JSON with sorted keys, so trials of one algorithm line up; raw text if not JSON."""
    try:
        return json.dumps(json.loads(params), sort_keys=True)
    except (TypeError, ValueError):
        return str(params)


def _sorted_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """Per algorithm, best score first; algorithms ordered by their best score, so the
    first row is the overall winner. Failed (NaN) trials go last."""
    best = trials.groupby("algorithm")["score"].max()
    ranked = trials.assign(_best=trials["algorithm"].map(best))
    return ranked.sort_values(["_best", "algorithm", "score", "trial"],
                              ascending=[False, True, False, True], na_position="last")


def _trials_table(trials: pd.DataFrame) -> str:
    if trials.empty:
        return "<p>No trials.</p>"
    rows = []
    seen = set()
    for row in _sorted_trials(trials).itertuples(index=False):
        # The first row of each algorithm is its best trial.
        mark = row.algorithm not in seen and not pd.isna(row.score)
        seen.add(row.algorithm)
        score = f"<b>{_fmt(row.score)}</b>" if mark else _fmt(row.score)
        rows.append(f"<tr><td>{_esc(row.algorithm)}</td><td class=\"num\">{_esc(row.trial)}</td>"
                    f"<td class=\"num\">{score}</td><td class=\"num\">{_fmt(row.seconds)}</td>"
                    f"<td><code>{_esc(_params_text(row.params))}</code></td></tr>")
    head = "".join(f"<th>{h}</th>" for h in ("algorithm", "trial", "score", "seconds", "params"))
    return f'<table class="trials"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


# --- atomic swap ---------------------------------------------------------------

def _swap_in(new: Path, out_dir: Path) -> None:
    """Replace out_dir by new: old aside, new in, old deleted (restored if the move fails)."""
    old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
    shutil.rmtree(old, ignore_errors=True)
    had_old = out_dir.exists()
    if had_old:
        out_dir.rename(old)
    try:
        new.rename(out_dir)
    except OSError:
        if had_old:
            old.rename(out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)
