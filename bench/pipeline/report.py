"""pipeline.md from the results document: per scale a table of stages (time, share,
peak RSS, load), the totals against issue 6's target, what dominates, how cost grows."""
from __future__ import annotations

from bench.growth import growth_markdown
from bench.quality.environment import load_note

ROLES = (("driver_jvm", "JVM"), ("driver_python", "driver Python"), ("python_workers", "Python workers"))


def _mb(stage: dict, role: str) -> str:
    value = stage.get("peak_rss_mb", {}).get(role)
    return f"{value:,.0f}" if value is not None else ""


def _load(values) -> str:
    return "/".join(f"{v:.1f}" for v in values[:2]) if values else "?"


def dominant(entry: dict) -> tuple[str, float] | None:
    """The stage with the largest share of the finished stages' time."""
    done = [s for s in entry.get("stages", []) if "seconds" in s]
    total = sum(s["seconds"] for s in done)
    if not done or total <= 0:
        return None
    top = max(done, key=lambda s: s["seconds"])
    return top["stage"], top["seconds"] / total


def scale_section(name: str, entry: dict) -> list[str]:
    shape, generation = entry["shape"], entry.get("generation", {})
    lines = [f"## {name} events: {shape['events']:,} events, {shape['users']:,} users, {shape['products']:,} products",
             "", f"Status: **{entry.get('status')}**" + (f" (last stage reached: {entry['reached']})"
                                                           if entry.get("status") != "complete" and entry.get("reached")
                                                           else ""), ""]
    if entry.get("note"):
        lines += [entry["note"], ""]
    if generation:
        reused = " (landing files reused from an earlier run; these are that run's figures)" if generation.get("reused") else ""
        lines += [f"Generation (not part of the pipeline): {generation.get('seconds', 0):.1f} s, "
                  f"{generation.get('bytes', 0) / 1e9:.2f} GB of JSON lines, peak RSS "
                  f"{generation.get('peak_rss_mb', {}).get('driver_python', 0):,.0f} MB{reused}. "
                  f"SparkSession start: {entry.get('session_seconds', 0):.1f} s.", ""]
    lines += ["| stage | status | seconds | share | CPU s (our processes) | peak RSS JVM (MB) | driver Python (MB) "
              "| Python workers (MB) | load avg 1/5 min at start | at end |", "|---|---|---|---|---|---|---|---|---|---|"]
    total = sum(s.get("seconds", 0) for s in entry.get("stages", []))
    for stage in entry.get("stages", []):
        seconds = stage.get("seconds")
        lines.append(f"| {stage['stage']} | {stage['status']} | {seconds:,.1f} | {seconds / total:.0%} "
                     if seconds is not None else f"| {stage['stage']} | {stage['status']} (not finished) | | ")
        cpu = stage.get("cpu_seconds")
        lines[-1] += (f"| {'' if cpu is None else f'{cpu:,.0f}'} | {_mb(stage, 'driver_jvm')} | {_mb(stage, 'driver_python')} | {_mb(stage, 'python_workers')} "
                      f"| {_load(stage.get('load_average_start'))} | {_load(stage.get('load_average_end'))} |")
    cpus = [s["cpu_seconds"] for s in entry.get("stages", []) if "cpu_seconds" in s]
    cpu = f"{sum(cpus):,.0f}" if cpus else "not measured"  # runs before CPU accounting have none
    lines.append(f"| **pipeline** | | **{total:,.1f}** | 100% | {cpu} | | | | | |")
    errors = [f"- {s['stage']}: `{s['error']}`" for s in entry.get("stages", []) if s.get("error")]
    if errors:
        lines += ["", "Failures:", *errors]
    env = entry.get("environment", {})
    machine = env.get("machine", {})
    versions = env.get("versions", {})
    git = env.get("git", {})
    lines += ["", f"Machine: {machine.get('cores')} cores, {machine.get('memory_gb')} GB, {machine.get('platform')}; "
              f"{load_note(machine.get('load_average'))}, {machine.get('load_average_end')} at the end "
              f"(the run's own work included). Spark {versions.get('spark')} ({entry.get('master')}, driver memory "
              f"{entry.get('driver_memory')}), delta-spark {versions.get('delta-spark')}, Python {versions.get('python')}; "
              f"commit {str(git.get('commit'))[:10]}{' (dirty tree)' if git.get('dirty') else ''}; {env.get('date')}. "
              f"Command: `{env.get('command')}`.", ""]
    return lines


def summary(result: dict, target_seconds: float) -> list[str]:
    lines = ["| events | users | products | status | pipeline (s) | target (s) | dominant stage (share) "
             "| highest peak RSS JVM (MB) | generation (s) |", "|---|---|---|---|---|---|---|---|---|"]
    for name, entry in result["scales"].items():
        shape = entry["shape"]
        top = dominant(entry)
        peaks = [s["peak_rss_mb"].get("driver_jvm", 0) for s in entry.get("stages", []) if "peak_rss_mb" in s]
        lines.append(f"| {name} | {shape['users']:,} | {shape['products']:,} | {entry.get('status')} "
                     f"| {entry.get('pipeline_seconds', 0):,.0f} | <= {target_seconds:,.0f} "
                     f"| {f'{top[0]} ({top[1]:.0%})' if top else ''} | {max(peaks, default=0):,.0f} "
                     f"| {entry.get('generation', {}).get('seconds', 0):.0f} |")
    return lines + [""]


def markdown(result: dict, target_seconds: float, serving: list[dict] | None = None) -> str:
    rules = result.get("rules", {})
    lines = ["# Nightly pipeline at scale", "",
             "Generated data (`jobs.generate_data`, JSON lines) through ingest, popularity, ALS, content "
             "(TF-IDF), hybrid, offline evaluation and the snapshot build, in one SparkSession as "
             "`jobs.run_pipeline --evaluate` runs them (`python -m bench.pipeline`). Time is wall time per stage; "
             "peak RSS is per stage (VmHWM reset at its start for the JVM and the driver's Python; the Python "
             "workers' sum sampled every 0.2 s).",
             "",
             f"Shapes: {rules.get('events_per_user', 10)} events per user and {rules.get('events_per_product', 100)} "
             "per product at every scale, the ratios of issue 6's point (10M events, 1M users, 100k products); "
             f"events over {rules.get('window_days', 30)} days, as of {rules.get('as_of')}. Issue 6's target: the "
             f"whole pipeline at 10M events in <= {target_seconds / 60:.0f} min on 2 cores. CPU s: CPU time of the "
             "driver's Python, the JVM and its Python workers during the stage (`bench/pipeline/cpu.py`); on 2 "
             "cores a stage that had the machine to itself would show about 2 x its wall time, so a lower ratio "
             "means it waited for cores that other work held.", "",
             *summary(result, target_seconds)]
    for name, entry in result["scales"].items():
        lines += scale_section(name, entry)
    lines.append(growth_markdown(result, serving or []))
    if result.get("findings"):
        lines += ["## Findings", "", result["findings"], ""]
    return "\n".join(lines)
