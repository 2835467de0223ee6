"""``GET /status``: one HTML page an operator reads, built from the same numbers as /metrics.

It shows the snapshot in service (version, data as-of, age), this worker's pid,
answers served and the hit rate, fallback counts by step, degraded answers and the
breaker, latency percentiles per endpoint (estimated from the histogram buckets,
summed over every worker), and the algorithm mix and CTR per algorithm over time.

"Over time": each worker runs a daemon thread that samples the aggregated counters
and the shared bandit counts every ``status_sample_seconds`` (server conf, default
10) into a ring buffer of the last ``SAMPLES_KEPT`` samples; the page draws them, plus
one sample taken while rendering, as inline SVG line charts. No JavaScript, no
external resource, every text escaped.
"""
from __future__ import annotations

import html
import logging
import os
import threading
import time
import weakref
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterable, Mapping, Sequence

from flask import Blueprint, Flask, Response, current_app

from lookup_server.metrics import (
    PREFIX, BanditCounts, LookupMetrics, app_metrics, iso_epoch, read_bandit_counts,
)
from lookup_server.state import AppState, app_state
from lookup_server.svg_chart import line_chart

log = logging.getLogger(__name__)

SAMPLES_KEPT = 360  # one hour at the default 10 s
DEFAULT_SAMPLE_SECONDS = 10.0
USER_ENDPOINT = "lookup.user_recommendations"  # the Flask endpoint whose algorithm mix is charted
_EXTENSION_KEY = "lookup_server.status_sampler"

blueprint = Blueprint("status", __name__)


# --- the counters, summed ---------------------------------------------------------

@dataclass
class Totals:
    """The counted metrics (over every worker), by what the page shows."""
    requests: dict[tuple[str, str], float] = field(default_factory=dict)          # (endpoint, status class)
    buckets: dict[str, dict[float, float]] = field(default_factory=dict)          # endpoint -> le -> cumulative
    answers: dict[tuple[str, str, str, str], float] = field(default_factory=dict)  # endpoint, algorithm, fallback, degraded
    personalised: dict[str, float] = field(default_factory=dict)                   # endpoint -> answers
    counters: dict[str, float] = field(default_factory=dict)                       # unlabelled, by short name

    @classmethod
    def from_families(cls, families: Iterable) -> "Totals":
        totals = cls()
        requests, personalised = defaultdict(float), defaultdict(float)
        buckets: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
        answers, counters = defaultdict(float), defaultdict(float)
        for family in families:
            for sample in family.samples:
                name, labels, value = sample.name, sample.labels, sample.value
                if not name.startswith(PREFIX):
                    continue
                short = name[len(PREFIX):]
                if short == "request_duration_seconds_count":
                    requests[labels["endpoint"], labels["status"]] += value
                elif short == "request_duration_seconds_bucket":
                    buckets[labels["endpoint"]][float(labels["le"])] += value
                elif short == "answers_total":
                    answers[labels["endpoint"], labels["algorithm"], labels["fallback"],
                            labels["degraded"]] += value
                elif short == "personalised_answers_total":
                    personalised[labels["endpoint"]] += value
                elif short.endswith("_total"):
                    counters[short[:-len("_total")]] += value
        totals.requests, totals.personalised = dict(requests), dict(personalised)
        totals.buckets = {endpoint: dict(b) for endpoint, b in buckets.items()}
        totals.answers, totals.counters = dict(answers), dict(counters)
        return totals

    def answers_by(self, *positions: int, endpoint: str | None = None) -> dict[tuple, float]:
        """Answers summed by the label positions given (0 endpoint, 1 algorithm, 2 fallback,
        3 degraded), optionally of one endpoint only."""
        summed: dict[tuple, float] = defaultdict(float)
        for key, value in self.answers.items():
            if endpoint is None or key[0] == endpoint:
                summed[tuple(key[p] for p in positions)] += value
        return dict(summed)


def quantile(buckets: Mapping[float, float], q: float) -> tuple[float, bool] | None:
    """The ``q`` quantile in seconds from cumulative histogram buckets (``le -> count``),
    interpolated linearly inside its bucket as Prometheus' histogram_quantile does;
    ``(largest finite bound, True)`` when it falls in the +Inf bucket; None without data."""
    bounds = sorted(buckets)
    total = buckets.get(float("inf"), buckets[bounds[-1]] if bounds else 0.0)
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower, True
            share = (rank - below) / (count - below) if count > below else 1.0
            return lower + (bound - lower) * share, False
        lower, below = bound, count
    return lower, True


# --- sampling over time -------------------------------------------------------------

@dataclass(frozen=True)
class Sample:
    """The aggregated counts at one moment: what the charts are drawn from."""
    at: float                                    # Unix seconds
    answers: Mapping[str, float]                 # user recommendations so far, by algorithm
    bandit: Mapping[str, tuple[float, float]] | None  # algorithm -> (impressions, rewards), all segments


def bandit_by_algorithm(counts: BanditCounts | None) -> dict[str, tuple[float, float]] | None:
    """``algorithm -> (impressions, rewards)`` over all segments (None stays None)."""
    if counts is None:
        return None
    summed: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for (_, algorithm), (shown, rewarded) in counts.items():
        summed[algorithm][0] += shown
        summed[algorithm][1] += rewarded
    return {algorithm: (s, r) for algorithm, (s, r) in summed.items()}


class StatusSampler:
    """A worker's ring buffer of samples, filled by a daemon thread every ``interval`` s.

    The thread holds the sampler only weakly between samples, so it ends by itself once
    the app is gone (tests build many apps in one process)."""

    def __init__(self, metrics: LookupMetrics, state: AppState, user_endpoint_rule: str | None,
                 interval: float = DEFAULT_SAMPLE_SECONDS, keep: int = SAMPLES_KEPT):
        if not interval > 0:
            raise ValueError(f"status_sample_seconds must be > 0, got {interval}")
        self.metrics, self.state, self.interval = metrics, state, interval
        self.user_endpoint_rule = user_endpoint_rule
        self.samples: deque[Sample] = deque(maxlen=keep)
        self._samples_lock = threading.Lock()  # the thread appends while a page copies
        self._lock = threading.Lock()
        self._owner_pid: int | None = None
        self._stop = threading.Event()

    def take(self, totals: Totals | None = None, bandit: BanditCounts | None = None,
             read_bandit: bool = True) -> Sample:
        """A sample of now (from ``totals``/``bandit`` when the caller read them already)."""
        if totals is None:
            self.metrics.sync_process_counters(self.state)
            totals = Totals.from_families(self.metrics.families())
        if bandit is None and read_bandit:
            bandit = read_bandit_counts(self.state)
        answers = {key[0]: value for key, value in
                   totals.answers_by(1, endpoint=self.user_endpoint_rule).items()}
        return Sample(time.time(), answers, bandit_by_algorithm(bandit))

    def add(self, sample: Sample) -> None:
        with self._samples_lock:
            self.samples.append(sample)

    def history(self) -> list[Sample]:
        """The samples kept, oldest first (a copy)."""
        with self._samples_lock:
            return list(self.samples)

    def ensure_started(self) -> None:
        """Start this process's sampling thread unless it runs (cheap: a pid check)."""
        pid = os.getpid()
        if self._owner_pid == pid:
            return
        with self._lock:
            if self._owner_pid == pid:
                return
            if self._owner_pid is not None:  # forked: the parent's samples are not ours
                self.samples.clear()
            self._stop = threading.Event()
            threading.Thread(target=_sample_forever, args=(weakref.ref(self), self._stop, self.interval),
                             name="status-sampler", daemon=True).start()
            self._owner_pid = pid

    def stop(self) -> None:
        self._stop.set()


def _sample_forever(sampler_ref, stop: threading.Event, interval: float) -> None:
    while not stop.is_set():
        sampler = sampler_ref()
        if sampler is None:
            return
        try:
            sampler.add(sampler.take())
        except Exception:  # the thread must outlive any one bad sample
            log.exception("status sample failed")
        del sampler
        stop.wait(interval)


# --- the Flask side -------------------------------------------------------------------

def init_app(app: Flask, sample_seconds=DEFAULT_SAMPLE_SECONDS) -> StatusSampler:
    """``GET /status`` and the worker's sampler (started on the first request, or by
    ``start_status_sampler`` from gunicorn's post_worker_init). Register it after the
    lookup routes: it looks up the user recommendations' rule to chart its mix."""
    if isinstance(sample_seconds, bool) or not isinstance(sample_seconds, (int, float)):
        raise ValueError(f"status_sample_seconds must be a number, got {sample_seconds!r}")
    app.register_blueprint(blueprint)
    user_rule = next((r.rule for r in app.url_map.iter_rules() if r.endpoint == USER_ENDPOINT), None)
    sampler = StatusSampler(app_metrics(app), app_state(app), user_rule, float(sample_seconds))
    app.extensions[_EXTENSION_KEY] = sampler
    app.before_request(sampler.ensure_started)
    return sampler


def status_sampler(app: Flask | None = None) -> StatusSampler:
    return (current_app if app is None else app).extensions[_EXTENSION_KEY]


@blueprint.get("/status")
def status():
    sampler, state, metrics = status_sampler(), app_state(), app_metrics()
    metrics.sync_process_counters(state)
    totals = Totals.from_families(metrics.families())
    bandit = read_bandit_counts(state)
    now = sampler.take(totals, bandit, read_bandit=False)
    page = render_page(state, totals, bandit, [*sampler.history(), now], sampler, now.at)
    return Response(page, content_type="text/html; charset=utf-8",
                    headers={"Cache-Control": "no-store"})


# --- the page ---------------------------------------------------------------------------

def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _count(value: float) -> str:
    return f"{value:,.0f}"


def _percent(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole > 0 else "–"


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _ms(estimate: tuple[float, bool] | None) -> str:
    if estimate is None:
        return "–"
    seconds, beyond = estimate
    return f"> {seconds * 1000:g} ms" if beyond else f"{seconds * 1000:.2f} ms"


def _table(headers: Sequence[str], rows: Sequence[Sequence], numeric_from: int = 1) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td{" class=num" if i >= numeric_from else ""}>{_e(cell)}</td>'
                         for i, cell in enumerate(row)) + "</tr>"
        for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _snapshot_section(state: AppState, now: float) -> str:
    snapshot = state.snapshot
    reader = snapshot.reader
    if reader is None:
        why = f" Last rejected: {snapshot.last_rejection}" if snapshot.last_rejection else ""
        return f'<p class="bad">No verified snapshot is loaded in this worker yet.{_e(why)}</p>'
    created = iso_epoch(reader.manifest.created_at)
    rows = [("version", reader.version),
            ("data as of", f"{reader.manifest.as_of} ({_duration(now - reader.as_of_epoch)} ago)"),
            ("built at", reader.manifest.created_at
             + (f" ({_duration(now - created)} ago)" if created is not None else "")),
            ("loaded by this worker", reader.loaded_at.strftime("%Y-%m-%d %H:%M:%S UTC")),
            ("versions refused by this worker", snapshot.rejected_count)]
    return ('<dl class="facts">' + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows)
            + "</dl>")


def _traffic_section(totals: Totals) -> str:
    by_endpoint = totals.answers_by(0)
    if not by_endpoint:
        return '<p class="quiet">No traffic yet: no recommendation has been answered.</p>'
    degraded = totals.answers_by(0, 3)
    answered = sum(by_endpoint.values())
    personalised = sum(totals.personalised.values())
    rows = [(endpoint, _count(n), _count(totals.personalised.get(endpoint, 0.0)),
             _percent(totals.personalised.get(endpoint, 0.0), n),
             _count(degraded.get((endpoint, "true"), 0.0)))
            for (endpoint,), n in sorted(by_endpoint.items())]
    headline = (f'<p class="headline"><span>{_count(answered)}</span> answers served, hit rate '
                f'<span class="hit-rate">{_percent(personalised, answered)}</span> '
                f'(answered from the user&#x27;s or product&#x27;s own list)</p>')
    return headline + _table(("endpoint", "answers", "own list", "hit rate", "degraded"), rows)


def _fallback_section(totals: Totals) -> str:
    steps = totals.answers_by(0, 2)
    if not steps:
        return '<p class="quiet">No traffic yet.</p>'
    rows = [(endpoint, "none (own list)" if step == "none" else step, _count(n))
            for (endpoint, step), n in sorted(steps.items())]
    return _table(("endpoint", "fallback step", "answers"), rows, numeric_from=2)


def _delta_section(state: AppState, totals: Totals, bandit: BanditCounts | None) -> str:
    degraded = sum(n for (d,), n in totals.answers_by(3).items() if d == "true")
    context = state.delta.context()
    if context is None:
        breaker, health = "–", "disabled in the server settings: answers come from the snapshot alone"
    else:
        breaker = context.breaker.state.replace("_", "-")
        health = "answering" if bandit is not None else "not answering: answers may be degraded"
    rows = [("real-time delta", health), ("circuit breaker (this worker)", breaker),
            ("degraded answers", _count(degraded)),
            ("delta calls failed", _count(totals.counters.get("delta_failures", 0.0))),
            ("delta calls skipped (breaker open)", _count(totals.counters.get("delta_skipped", 0.0))),
            ("exploration slots filled", _count(totals.counters.get("explored_items", 0.0)))]
    return ('<dl class="facts">' + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows)
            + "</dl>")


def _latency_section(totals: Totals) -> str:
    if not totals.requests:
        return '<p class="quiet">No traffic yet.</p>'
    statuses = sorted({status for _, status in totals.requests})
    rows = []
    for endpoint in sorted({endpoint for endpoint, _ in totals.requests}):
        counts = [totals.requests.get((endpoint, s), 0.0) for s in statuses]
        buckets = totals.buckets.get(endpoint, {})
        rows.append((endpoint, _count(sum(counts)), *(_count(c) for c in counts),
                     *(_ms(quantile(buckets, q)) for q in (0.5, 0.95, 0.99))))
    return _table(("endpoint", "requests", *statuses, "p50", "p95", "p99"), rows)


def _ctr_table(bandit: BanditCounts | None, state: AppState) -> str:
    if bandit is None:
        return ('<p class="quiet">No bandit counts: the real-time delta is '
                + ("disabled." if state.delta.context() is None else "not answering.") + "</p>")
    if not bandit:
        return '<p class="quiet">No impressions recorded yet.</p>'
    rows = [(segment, algorithm, _count(shown), _count(rewarded),
             f"{rewarded / shown:.4f}" if shown > 0 else "–")
            for (segment, algorithm), (shown, rewarded) in sorted(bandit.items())]
    return _table(("segment", "algorithm", "impressions", "rewards", "CTR"), rows, numeric_from=2)


def mix_series(samples: Sequence[Sample]) -> dict[str, list[tuple[float, float]]]:
    """Per algorithm, its share of the user answers given between consecutive samples
    (the first sample: of all answers before it); intervals without answers give no point."""
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    previous: Mapping[str, float] = {}
    for sample in samples:
        delta = {a: n - previous.get(a, 0.0) for a, n in sample.answers.items()}
        total = sum(delta.values())
        if total > 0 and all(d >= 0 for d in delta.values()):  # a negative one: counters restarted
            for algorithm, d in delta.items():
                series[algorithm].append((sample.at, d / total))
        previous = sample.answers
    return dict(series)


def ctr_series(samples: Sequence[Sample]) -> dict[str, list[tuple[float, float]]]:
    """Per algorithm, rewards per impression so far (all segments) at each sample."""
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for sample in samples:
        for algorithm, (shown, rewarded) in (sample.bandit or {}).items():
            if shown > 0:
                series[algorithm].append((sample.at, rewarded / shown))
    return dict(series)


def _charts_section(samples: Sequence[Sample], sampler: StatusSampler, state: AppState) -> str:
    every = (f"Sampled every {sampler.interval:g} s by this worker ({len(samples) - 1} samples kept, "
             f"at most {sampler.samples.maxlen}, plus one taken now); counts summed over every worker.")
    mix = mix_series(samples)
    mix_html = (line_chart("Algorithm mix: share of user recommendations", mix, percent=True)
                if mix else '<p class="quiet">No traffic yet: no user recommendation answered.</p>')
    ctr = ctr_series(samples)
    if ctr:
        ctr_html = line_chart("CTR per algorithm: rewards per impression so far", ctr)
    elif state.delta.context() is None:
        ctr_html = '<p class="quiet">No CTR: the real-time delta is disabled.</p>'
    else:
        ctr_html = '<p class="quiet">No CTR yet: no impression recorded (or the delta is not answering).</p>'
    return f'<p class="quiet">{_e(every)}</p><div class="charts">{mix_html}{ctr_html}</div>'


_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1000px;padding:0 16px;color:#222}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid #ddd}
.meta,.quiet{color:#666}.bad{color:#b00020;font-weight:600}
.headline{font-size:16px}.headline span{font-weight:700}
table{border-collapse:collapse;margin:6px 0}th,td{padding:3px 10px;border-bottom:1px solid #eee;text-align:left}
th{background:#f5f5f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
dl.facts{display:grid;grid-template-columns:max-content auto;gap:3px 16px;margin:6px 0}
dt{color:#555}dd{margin:0;font-weight:600}
.chart{display:block;margin:10px 0;background:#fcfcfc;border:1px solid #eee}
.chart .grid{stroke:#e5e5e5}.chart .tick{font-size:11px;fill:#666}
.chart .chart-title{font-size:13px;font-weight:600;fill:#222}.chart .legend-name{font-size:12px;fill:#222}
"""


def render_page(state: AppState, totals: Totals, bandit: BanditCounts | None,
                samples: Sequence[Sample], sampler: StatusSampler, now: float) -> str:
    """The whole page; every value from outside (versions, algorithm names, ...) escaped."""
    reader = state.snapshot.reader
    version = reader.version if reader is not None else "no snapshot"
    generated = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    sections = [
        ("Snapshot", _snapshot_section(state, now)),
        ("Traffic and hit rate", _traffic_section(totals)),
        ("Fallbacks by step", _fallback_section(totals)),
        ("Real-time delta", _delta_section(state, totals, bandit)),
        ("Latency (all workers, estimated from histogram buckets)", _latency_section(totals)),
        ("Algorithm mix and CTR over time", _charts_section(samples, sampler, state)),
        ("CTR per segment and algorithm (shared by every replica)", _ctr_table(bandit, state)),
    ]
    body = "".join(f"<section><h2>{_e(title)}</h2>{content}</section>" for title, content in sections)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta http-equiv="refresh" content="30">'
            f"<title>recsys lookup status: {_e(version)}</title><style>{_STYLE}</style></head><body>"
            f"<h1>recsys lookup server</h1>"
            f'<p class="meta">Snapshot <strong class="version">{_e(version)}</strong> · worker pid '
            f'<strong class="pid">{os.getpid()}</strong> · generated {_e(generated)} · refreshes every 30 s</p>'
            f"{body}</body></html>")
