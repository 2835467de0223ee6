"""The report: a Markdown table per protocol with the side-by-side ratios, and every
number in JSON (``quality.json``, ``quality.md``)."""
from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

from jobs.evaluation import BASELINE
from jobs.tuned import write_json_atomically

from bench.quality.implicit_als import ALGORITHM as IMPLICIT
from bench.quality.implicit_als import TUNED as IMPLICIT_TUNED
from bench.quality.protocols import SINGLE_GENERATORS, TABLE_K, ProtocolRun

ROWS = (BASELINE, "popular", "als", "ease", "content", "hybrid", "ranked", IMPLICIT, IMPLICIT_TUNED)  # table order
OURS = ("popular", "als", "ease", "content", "hybrid", "ranked")
METRIC_COLUMNS = (("NDCG", "ndcg"), ("Recall", "recall"), ("HitRate", "hit_rate"), ("MAP", "map"), ("MAP (all relevant)", "map_all"),
                  ("Precision", "precision"))
# Compared with the global popular list, the floor every algorithm must beat.
OVER_BASELINE = (("ALS", "als"), ("EASE", "ease"), ("hybrid", "hybrid"), ("ranked", "ranked"), ("content", "content"),
                 ("implicit ALS", IMPLICIT), ("implicit ALS tuned", IMPLICIT_TUNED))

NOTES = (
    "Same split, same training part, same scoring code for every row: implicit's lists are scored "
    "by jobs.evaluation.score_algorithms like the project's own.",
    "Confidence matched: both ALS read rating = log1p(sum of decayed event weights) per (user, product). "
    "The job's ALS uses c = 1 + alpha * rating; implicit 0.7.3 uses its matrix value as c (after scaling "
    "by its alpha), so it is given 1 + alpha * rating with its alpha = 1.",
    "Solver: the job's ALS is conf's solver, named in each protocol's ALS line. With \"cg\" (the "
    "default) it runs implicit's own conjugate-gradient kernel (3 steps per row and iteration, "
    "regularisation added as it is) from the same initial factors, distributed over Spark by "
    "jobs.als_cg: its lists are implicit's. With \"spark\", Spark ML solves exactly and multiplies "
    "regParam by each user's / item's rating count (ALS-WR).",
    "Same rank, iterations, regularisation value, seed, list length (top_n) and purchase filter; "
    "implicit on its CPU model with as many threads as Spark has cores.",
    "Wall time: the job's ALS = confidences + dense indexes + fit + user lists (materialised); implicit = fit + "
    "user lists. Collecting implicit's input from Spark into a CSR matrix is timed apart "
    "(implicit_als_prepare) and left out of the ratio.",
    "The job's timed run is its second fit on the same training part (the evaluation's came first), so "
    "JVM start-up and JIT warm-up are not in it; other work on the machine inflates either figure.",
    "hybrid fuses the project's own lists (the job's ALS, content, popular), not implicit's; ranked "
    "(LightGBM lambdarank) re-ranks the union of popular, ALS, EASE and content lists.",
    "Tuned protocols: ours (ALS, EASE, the ranker, the hybrid's weights) and implicit's ALS "
    "(implicit_als_tuned: same search space, sampler, trials and ALS share of the budget) are searched on "
    "a validation split carved from the training part; the test part is read once, by the table. "
    "implicit_als keeps our ALS settings: the implementation comparison.",
    "Users without a list of an algorithm are served the global popular list, as the server would.",
)


def finite(value: float | None) -> float | None:
    """``value``, or None for NaN (JSON has no NaN)."""
    return None if value is None or math.isnan(value) else value


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    numerator, denominator = finite(numerator), finite(denominator)
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def summary(run: ProtocolRun) -> dict[str, dict[str, float]]:
    """Per algorithm, every metric over all users (segment ``all``), plus ``users``."""
    table: dict[str, dict[str, float]] = {}
    for algorithm, segment, metric, value, users in run.results:
        if segment == "all":
            row = table.setdefault(algorithm, {})
            row[metric] = finite(value)
            if metric == f"ndcg@{TABLE_K}":
                row["users"] = users
    return table


def comparisons(run: ProtocolRun) -> dict:
    """The side-by-side ratios of one protocol."""
    ndcg = {algorithm: row.get(f"ndcg@{TABLE_K}") for algorithm, row in summary(run).items()}
    ours = {a: finite(ndcg.get(a)) for a in OURS if finite(ndcg.get(a)) is not None}
    singles = {a: v for a, v in ours.items() if a in SINGLE_GENERATORS}
    best = max(ours, key=ours.get) if ours else None
    best_single = max(singles, key=singles.get) if singles else None
    return {
        "best_list": best,
        "best_over_tuned_implicit_ndcg": ratio(ndcg.get(best), ndcg.get(IMPLICIT_TUNED)) if best else None,
        "best_single_generator": best_single,
        "ranked_over_best_single_ndcg": ratio(ndcg.get("ranked"), ndcg.get(best_single)) if best_single else None,
        "spark_over_implicit_ndcg": ratio(ndcg.get("als"), ndcg.get(IMPLICIT)),
        "spark_over_implicit_seconds": ratio(run.seconds["spark_als"], run.seconds["implicit_als"]),
        "over_global_popularity_ndcg": {algorithm: ratio(ndcg.get(algorithm), ndcg.get(BASELINE))
                                        for _, algorithm in OVER_BASELINE},
    }


def _number(value: float | None, digits: int = 4) -> str:
    return "n/a" if finite(value) is None else f"{value:.{digits}f}"


def metrics_table(run: ProtocolRun) -> list[str]:
    """The Markdown table: one row per algorithm, metrics over all scored users."""
    coverage = f"coverage@{max(run.params.ks)}"
    header = [f"{label}@{TABLE_K}" for label, _ in METRIC_COLUMNS] + ["MRR", coverage, "users"]
    lines = ["| algorithm | " + " | ".join(header) + " |", "|---|" + "---:|" * len(header)]
    rows = summary(run)
    for algorithm in (a for a in ROWS if a in rows):
        row = rows[algorithm]
        cells = [_number(row.get(f"{key}@{TABLE_K}")) for _, key in METRIC_COLUMNS]
        cells += [_number(row.get("mrr")), _number(row.get(coverage)), str(int(row.get("users", 0)))]
        lines.append(f"| {algorithm} | " + " | ".join(cells) + " |")
    return lines


def comparison_lines(run: ProtocolRun) -> list[str]:
    ratios = comparisons(run)
    seconds = run.seconds
    lines = [f"- the job's ALS / implicit ALS: NDCG@{TABLE_K} ratio {_number(ratios['spark_over_implicit_ndcg'], 2)}, "
             f"wall-time ratio {_number(ratios['spark_over_implicit_seconds'], 2)} "
             f"({seconds['spark_als']:.2f} s / {seconds['implicit_als']:.2f} s; implicit's input collected "
             f"in {seconds['implicit_als_prepare']:.2f} s more)"]
    if ratios["best_list"]:
        lines.append(f"- best list ({ratios['best_list']}) / implicit ALS tuned: NDCG@{TABLE_K} ratio "
                     f"{_number(ratios['best_over_tuned_implicit_ndcg'], 2)}")
        lines.append(f"- ranked / best single generator ({ratios['best_single_generator']}): NDCG@{TABLE_K} ratio "
                     f"{_number(ratios['ranked_over_best_single_ndcg'], 2)}")
    for label, algorithm in OVER_BASELINE:
        value = ratios["over_global_popularity_ndcg"][algorithm]
        if value is not None:
            lines.append(f"- {label} / global popularity NDCG@{TABLE_K}: {_number(value, 2)}x")
    return lines


def setup_lines(run: ProtocolRun) -> list[str]:
    """What was run: data, split, settings, tuning, step times."""
    data, split, settings = run.dataset, run.split, run.settings
    als = settings["als"]
    lines = [
        run.protocol.description + ".",
        "",
        f"- data: {data['interactions']:,} interactions, {data['users']:,} users, {data['products']:,} products "
        f"({data['source']}); clock {data['as_of']}",
        f"- split: {split['training_rows']:,} training rows up to {split['train_until']}, "
        f"{split['users_scored']:,} users scored",
        f"- ALS (both): the job's solver {als.get('solver', 'spark')}, rank {als['rank']}, "
        f"{als['max_iter']} iterations, regularisation {als['reg_param']}, "
        f"alpha {als['alpha']}, half-life {als['half_life_days']:g} days, top {als['top_n']}; "
        f"hybrid weights {json.dumps(settings['hybrid'].get('weights'))}",
    ]
    if run.tuning:
        scores = run.tuning["scores"]
        lines.append("- tuned on validation data (" + run.tuning["metric"] + "): " + "; ".join(
            f"{name} trial {s['best_trial']} of {s['trials']}, {_number(s['conf'])} -> {_number(s['best'])}"
            for name, s in scores.items()))
    lines.append("- seconds: " + ", ".join(f"{step} {value:.1f}" for step, value in run.seconds.items()))
    return lines


def protocol_markdown(run: ProtocolRun) -> str:
    return "\n".join([f"## {run.protocol.name}", "", *setup_lines(run), "", *metrics_table(run), "",
                      *comparison_lines(run), ""])


def markdown(runs: list[ProtocolRun], env: dict) -> str:
    machine, versions = env["machine"], env["versions"]
    header = [
        "# Offline recommendation quality on real data",
        "",
        *(["**Quick run (--quick): a smoke test, not the real figures.**", ""] if env["options"]["quick"] else []),
        f"`{env['command']}` on {env['date']}, commit {env['git']['commit']}"
        + (" (working tree modified)" if env["git"]["dirty"] else "") + ".",
        f"{machine['cores']} cores, {machine['memory_gb']} GB, load average {machine['load_average']} "
        f"at the end; Python {versions['python']}, "
        f"Spark {versions['spark']}, implicit {versions['implicit']}.",
        "",
        f"Metrics at {TABLE_K} (MRR uncut), mean over every scored user; coverage = share of the catalog "
        "shown to anyone.",
        "",
        *(f"- {note}" for note in NOTES),
        "",
    ]
    return "\n".join(header + [protocol_markdown(run) for run in runs])


def document(runs: list[ProtocolRun], env: dict) -> dict:
    """Every number of the run, for ``quality.json``."""
    return {
        **env,
        "notes": list(NOTES),
        "protocols": {run.protocol.name: {
            "description": run.protocol.description,
            "dataset": run.dataset,
            "evaluation": asdict(run.params),
            "settings": run.settings,
            "split": run.split,
            "table": summary(run),
            "comparisons": comparisons(run),
            "seconds": {step: round(value, 2) for step, value in run.seconds.items()},
            "implicit_input": run.implicit,
            "tuning": run.tuning,
            "results": [{"algorithm": a, "segment": s, "metric": m, "value": finite(v), "users": u}
                        for a, s, m, v, u in run.results],
        } for run in runs},
    }


def write_report(out_dir: Path, runs: list[ProtocolRun], env: dict) -> tuple[Path, Path]:
    """``quality.json`` and ``quality.md`` in ``out_dir``; return their paths."""
    json_path, md_path = out_dir / "quality.json", out_dir / "quality.md"
    write_json_atomically(json_path, document(runs, env))
    md_path.write_text(markdown(runs, env))
    return json_path, md_path
