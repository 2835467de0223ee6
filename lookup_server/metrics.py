"""Prometheus metrics of the lookup server, exposed at ``GET /metrics``.

Under gunicorn every worker is its own process, so counters live in prometheus_client's
*multiprocess mode*: ``conf/gunicorn.conf.py`` sets ``PROMETHEUS_MULTIPROC_DIR`` in the
master before any worker forks, each worker's increments go to its own memory-mapped
file there, and a scrape (served by whichever worker gets it) sums the files of every
worker, live or dead. Outside gunicorn (Flask test client, ``python -m lookup_server``)
the variable is unset and each app keeps its metrics in its own in-memory registry.

Counted per request, a few increments each:

- ``recsys_lookup_request_duration_seconds{endpoint,status}``: latency histogram by
  route rule (``unmatched`` for 404/405) and status class (``2xx`` ...);
- ``recsys_lookup_answers_total{endpoint,algorithm,fallback,degraded}`` and
  ``recsys_lookup_personalised_answers_total{endpoint}`` (the entity's own list
  answered, fallback null): their ratio is the hit rate;
- ``recsys_lookup_explored_items_total``: exploration slots filled;
- ``recsys_lookup_trending_items_total``: trending products in global-fallback answers;
- ``recsys_lookup_delta_failures_total`` / ``recsys_lookup_delta_skipped_total``: the
  worker's circuit breaker counts, carried into the shared counters by difference;
- ``recsys_lookup_snapshots_rejected_total{reason}``: versions a worker refused to
  serve, by why (``lookup_server.snapshot_reader.REJECTION_REASONS``, each exported
  from 0; the worker's log says which version and the details);
- ``recsys_lookup_scrape_errors_total{source}``: a scrape could not read the delta.

Read at scrape time, never stored in the multiprocess files:

- ``recsys_lookup_snapshot_info{version}`` (=1), ``recsys_lookup_snapshot_age_seconds``
  (now - manifest created_at) and ``recsys_lookup_snapshot_data_age_seconds`` (now -
  as_of), of the scraping worker's snapshot (all workers follow the same CURRENT);
- ``recsys_lookup_bandit_impressions``, ``recsys_lookup_bandit_rewards`` and
  ``recsys_lookup_ctr`` ``{segment,algorithm}``: the delta store's bandit counters,
  which are already shared by every replica, so one worker's read is the total.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from datetime import datetime, timezone
from typing import Iterable, Mapping

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from lookup_server.delta import DeltaUnavailable
from lookup_server.realtime import MergedAnswer
from lookup_server.snapshot_reader import REJECTION_REASONS
from lookup_server.state import AppState, app_state

log = logging.getLogger(__name__)

PREFIX = "recsys_lookup_"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# A lookup is a few LMDB page reads: most answers take well under 5 ms.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
UNMATCHED = "unmatched"  # the endpoint label of a request no route matched (404, 405)
_EXTENSION_KEY = "lookup_server.metrics"

BanditCounts = Mapping[tuple[str, str], tuple[float, float]]

blueprint = Blueprint("metrics", __name__)


def multiprocess_dir() -> str | None:
    """The folder of the per-worker metric files, or None outside gunicorn."""
    return os.environ.get(MULTIPROC_ENV) or None


class LookupMetrics:
    """The metric objects of one app (one app per worker process)."""

    def __init__(self):
        # The app's own registry: in single-process mode it is what /metrics exposes
        # (and two apps in one test process do not share counts); in multiprocess
        # mode the values go to the shared files and the registry goes unused.
        self.registry = CollectorRegistry()
        r = self.registry
        self.latency = Histogram(PREFIX + "request_duration_seconds",
                                 "Time from the request's arrival in Flask to its response.",
                                 ("endpoint", "status"), buckets=LATENCY_BUCKETS, registry=r)
        self.answers = Counter(PREFIX + "answers", "Recommendation answers by what answered them.",
                               ("endpoint", "algorithm", "fallback", "degraded"), registry=r)
        self.personalised = Counter(PREFIX + "personalised_answers",
                                    "Answers from the user's or product's own list (no fallback).",
                                    ("endpoint",), registry=r)
        self.explored = Counter(PREFIX + "explored_items",
                                "New products given an exploration slot.", registry=r)
        self.trending = Counter(PREFIX + "trending_items",
                                "Trending products placed in global-fallback answers.", registry=r)
        self.delta_failures = Counter(PREFIX + "delta_failures",
                                      "Delta store calls that failed (circuit breaker).", registry=r)
        self.delta_skipped = Counter(PREFIX + "delta_skipped",
                                     "Delta store calls skipped while the breaker was open.", registry=r)
        self.snapshots_rejected = Counter(PREFIX + "snapshots_rejected",
                                          "Snapshot versions a worker refused to serve, by why.",
                                          ("reason",), registry=r)
        for reason in REJECTION_REASONS:  # from 0: an alert on increase() sees the first one
            self.snapshots_rejected.labels(reason)
        self.scrape_errors = Counter(PREFIX + "scrape_errors",
                                     "Scrape-time reads that failed, by source.", ("source",), registry=r)
        self._children: dict[tuple, object] = {}  # see child()
        self._sync_lock = threading.Lock()
        self._breaker = None            # the breaker whose counts were carried last
        self._breaker_seen = (0, 0)     # its (failed, skipped) then
        self._rejected_seen: dict[str, int] = {}  # by reason

    def child(self, metric, *values: str):
        """``metric.labels(*values)``, remembered: ``labels`` checks its arguments and
        takes a lock on every call, and each request asks for the same few children."""
        key = (metric, values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def sync_process_counters(self, state: AppState) -> None:
        """Carry what this process counted in plain ints (breaker, snapshot watcher) into
        the shared counters, by difference since the last call: each worker adds its
        own increments once, so the sum over workers is right."""
        with self._sync_lock:
            rejected = state.snapshot.rejected_by_reason
            for reason, count in rejected.items():
                seen = self._rejected_seen.get(reason, 0)
                if count > seen:
                    self.snapshots_rejected.labels(reason).inc(count - seen)
            self._rejected_seen = rejected
            context = state.delta.context()
            if context is None:
                return
            breaker = context.breaker
            if breaker is not self._breaker:  # first look, or reopened after a fork
                self._breaker, self._breaker_seen = breaker, (0, 0)
            failed, skipped = breaker.failed, breaker.skipped
            seen_failed, seen_skipped = self._breaker_seen
            if failed > seen_failed:
                self.delta_failures.inc(failed - seen_failed)
            if skipped > seen_skipped:
                self.delta_skipped.inc(skipped - seen_skipped)
            self._breaker_seen = (failed, skipped)

    def families(self) -> Iterable[Metric]:
        """The counted metrics, summed over every worker in multiprocess mode."""
        path = multiprocess_dir()
        if path:
            return MultiProcessCollector(None, path).collect()
        return self.registry.collect()


def init_app(app: Flask) -> LookupMetrics:
    """Give ``app`` its metrics, the latency hooks and ``GET /metrics``."""
    metrics = LookupMetrics()
    app.extensions[_EXTENSION_KEY] = metrics
    app.register_blueprint(blueprint)
    return metrics


def app_metrics(app: Flask | None = None) -> LookupMetrics:
    return (current_app if app is None else app).extensions[_EXTENSION_KEY]


# --- per request --------------------------------------------------------------

@blueprint.before_app_request
def _start_timer() -> None:
    g.metrics_started = time.perf_counter()


@blueprint.after_app_request
def _observe_latency(response: Response) -> Response:
    started = g.pop("metrics_started", None)
    if started is not None:
        rule = request.url_rule
        metrics = app_metrics()
        metrics.child(metrics.latency, rule.rule if rule is not None else UNMATCHED,
                      f"{response.status_code // 100}xx").observe(time.perf_counter() - started)
    return response


def observe_answer(merged: MergedAnswer) -> None:
    """Count one answer of the current route: what answered it, and what it cost the
    delta. Call it after the handler's last delta call."""
    metrics = app_metrics()
    endpoint = request.url_rule.rule
    answer = merged.recommendation
    metrics.child(metrics.answers, endpoint, answer.algorithm or "none", answer.fallback or "none",
                  "true" if merged.degraded else "false").inc()
    if answer.fallback is None:
        metrics.child(metrics.personalised, endpoint).inc()
    if merged.explored:
        metrics.explored.inc(len(merged.explored))
    if merged.trending:
        metrics.trending.inc(merged.trending)
    # Every request: a failed impression write (record_served) degrades no answer.
    metrics.sync_process_counters(app_state())


# --- at scrape time -------------------------------------------------------------

def read_bandit_counts(state: AppState, scrape: LookupMetrics | None = None) -> BanditCounts | None:
    """The shared ``(segment, algorithm) -> (impressions, rewards)``; None when the
    delta is disabled or cannot answer. For a /metrics scrape, pass its metrics: a
    failure is then logged and counted as a scrape error (the /status page and its
    sampler read quietly: they say so on the page)."""
    context = state.delta.context()
    if context is None:
        return None
    try:
        return context.store.bandit_counts()
    except Exception as exc:  # noqa: BLE001 - DeltaUnavailable or worse: the reader must answer
        if scrape is None:
            log.debug("bandit counts unavailable: %s", exc)
            return None
        if isinstance(exc, DeltaUnavailable):
            log.warning("bandit counts unavailable for metrics: %s", exc)
        else:
            log.exception("reading bandit counts for metrics failed")
        scrape.scrape_errors.labels("bandit").inc()
    return None


class ScrapeTimeCollector:
    """Gauges computed when scraped: this worker's snapshot and the shared bandit counts."""

    def __init__(self, state: AppState, bandit: BanditCounts | None, now: float | None = None):
        self._state = state
        self._bandit = bandit
        self._now = time.time() if now is None else now

    def collect(self) -> Iterable[Metric]:
        reader = self._state.snapshot.reader
        if reader is not None:
            info = GaugeMetricFamily(PREFIX + "snapshot_info", "The snapshot version in service (=1).",
                                     labels=("version",))
            info.add_metric((reader.version,), 1.0)
            yield info
            created = iso_epoch(reader.manifest.created_at)
            if created is not None:
                yield GaugeMetricFamily(PREFIX + "snapshot_age_seconds",
                                        "Seconds since the served snapshot was built.",
                                        value=self._now - created)
            yield GaugeMetricFamily(PREFIX + "snapshot_data_age_seconds",
                                    "Seconds since the served snapshot's data cut-off (as_of).",
                                    value=self._now - reader.as_of_epoch)
        if self._bandit is None:
            return
        labels = ("segment", "algorithm")
        impressions = GaugeMetricFamily(PREFIX + "bandit_impressions",
                                        "Answers served, shared by every replica.", labels=labels)
        rewards = GaugeMetricFamily(PREFIX + "bandit_rewards",
                                    "Rewards credited to served answers, shared by every replica.",
                                    labels=labels)
        ctr = GaugeMetricFamily(PREFIX + "ctr", "Rewards per impression.", labels=labels)
        for (segment, algorithm), (shown, rewarded) in sorted(self._bandit.items()):
            impressions.add_metric((segment, algorithm), shown)
            rewards.add_metric((segment, algorithm), rewarded)
            if shown > 0:
                ctr.add_metric((segment, algorithm), rewarded / shown)
        yield from (impressions, rewards, ctr)


class _Exposition:
    """What one scrape exposes: the output of each ``collect`` function, in order."""

    def __init__(self, *collects):
        self._collects = collects

    def collect(self) -> Iterable[Metric]:
        for collect in self._collects:
            yield from collect()


@blueprint.get("/metrics")
def metrics_endpoint():
    state, metrics = app_state(), app_metrics()
    metrics.sync_process_counters(state)
    bandit = read_bandit_counts(state, metrics)  # before the counters are read: errors show now
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encode(_Exposition(metrics.families, ScrapeTimeCollector(state, bandit).collect))
    return Response(body, content_type=content_type)


def iso_epoch(text: str | None) -> float | None:
    """Unix seconds of an ISO 8601 time (``...Z`` allowed); None if it is not one."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:  # manifests write UTC
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()
