"""GET /status: the page an operator reads, checked for what a person would see, both
from the Flask test client and as rendered by headless Chromium from a real gunicorn."""
from __future__ import annotations

import re
import shutil
import subprocess
import time
from html.parser import HTMLParser

import pytest
import requests

from lookup_server import app_state
from lookup_server.delta import Served
from lookup_server.delta.factory import open_delta_store
from lookup_server.status_page import (
    Sample, StatusSampler, ctr_series, mix_series, quantile, status_sampler,
)
from lookup_server.svg_chart import line_chart
from tests.lookup_fixtures import publish_snapshot, running_gunicorn, wait_until

XSS = '<script>alert("x")</script>'


class PageView(HTMLParser):
    """What a reader sees of a page: its text, its charts (title and legend names), and
    the elements that would run code or fetch something."""

    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.words: list[str] = []
        self.charts: list[dict] = []  # {"title": str, "legend": [names]}
        self.active: list[str] = []   # script tags, on* attributes, external src/href
        self._in: list[str] = []      # classes of the open text-bearing elements we track
        self._skip = 0                # inside <style>/<title> of the head
        self.feed(page)
        self.text = " ".join(" ".join(self.words).split())

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script":
            self.active.append("script")
        self.active += [name for name in attrs if name.startswith("on")]
        self.active += [f"{name}={value}" for name, value in attrs.items()
                        if name in ("src", "href") and value and "://" in value]
        if tag == "svg":
            self.charts.append({"title": None, "legend": []})
        if tag in ("style", "title") and not self.charts:
            self._skip += 1
        self._in.append(attrs.get("class", "") if tag == "text" else "")

    def handle_endtag(self, tag):
        if tag in ("style", "title") and not self.charts and self._skip:
            self._skip -= 1
        if self._in:
            self._in.pop()

    def handle_data(self, data):
        if self._skip:
            return
        self.words.append(data)
        css = self._in[-1] if self._in else ""
        if css == "legend-name":
            self.charts[-1]["legend"].append(data)
        elif css == "chart-title":
            self.charts[-1]["title"] = data


def hit_rate(view: PageView) -> float:
    match = re.search(r"answers served, hit rate ([\d.]+)%", view.text)
    assert match, view.text
    return float(match.group(1))


# --- the Flask test client ------------------------------------------------------------

def test_zero_traffic_page_says_so(make_app, snapshot_root):
    """Before any recommendation: the snapshot, "no traffic yet", no chart, no error."""
    publish_snapshot(snapshot_root, "v1")
    app = make_app()
    assert app_state(app).snapshot.refresh()
    response = app.test_client().get("/status")
    assert response.status_code == 200
    assert response.content_type == "text/html; charset=utf-8"
    view = PageView(response.get_data(as_text=True))
    assert "Snapshot v1" in view.text
    assert "No traffic yet" in view.text
    assert "circuit breaker (this worker) closed" in view.text
    assert view.charts == []
    assert view.active == []


def test_page_without_snapshot_or_delta(make_app):
    """Nothing published and the delta disabled: the page still renders and says both."""
    view = PageView(make_app(delta={"enabled": False}).test_client().get("/status").get_data(as_text=True))
    assert "No verified snapshot is loaded in this worker yet" in view.text
    assert "disabled in the server settings" in view.text
    assert "No bandit counts: the real-time delta is disabled." in view.text


def test_page_shows_traffic_fallbacks_latency_and_charts(app, client):
    """After traffic: answers and hit rate, fallback steps, latency percentiles, the two
    charts with the algorithm names in their legends, the CTR table."""
    for url in ["/v1/users/1/recommendations"] * 3 + ["/v1/users/5555/recommendations",
                                                      "/v1/products/10/similar", "/v1/users/x/recommendations"]:
        client.get(url)
    store = app_state(app).delta.context().store
    store.record_served("clicked", Served("als", "known", 2))
    store.reward("clicked")

    view = PageView(client.get("/status").get_data(as_text=True))
    assert "5 answers served" in view.text
    assert hit_rate(view) == pytest.approx(80.0)  # 3 own user lists + 1 own similar list of 5
    assert "/v1/users/<user_id>/recommendations unknown_user 1" in view.text
    assert "/v1/users/<user_id>/recommendations none (own list) 3" in view.text
    assert re.search(r"/v1/users/<user_id>/recommendations 5 4 1 [\d.]+ ms [\d.]+ ms [\d.]+ ms", view.text)
    mix, ctr = view.charts
    assert mix["title"].startswith("Algorithm mix") and mix["legend"] == ["popular", "popular_fallback"]
    assert ctr["title"].startswith("CTR per algorithm") and "als" in ctr["legend"]
    assert "known als 1 1 1.0000" in view.text
    assert view.active == []


def test_everything_from_outside_is_escaped(app, client):
    """Algorithm and segment names come from the shared store: shown as text, never markup."""
    store = app_state(app).delta.context().store
    store.record_served("r1", Served(XSS, "<b>seg</b>", 1))
    store.reward("r1")
    page = client.get("/status").get_data(as_text=True)
    assert "<script" not in page and "<b>seg" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    view = PageView(page)
    assert view.active == []
    assert f"<b>seg</b> {XSS} 1 1 1.0000" in view.text  # the text a reader sees
    assert view.charts[-1]["legend"] == [XSS]


# --- the pieces ---------------------------------------------------------------------------

def test_quantiles_from_cumulative_buckets():
    buckets = {0.001: 50.0, 0.005: 90.0, 0.01: 100.0, float("inf"): 100.0}
    assert quantile(buckets, 0.5) == pytest.approx((0.001, False))
    assert quantile(buckets, 0.7) == pytest.approx((0.003, False))   # halfway into (1 ms, 5 ms]
    assert quantile(buckets, 0.95) == pytest.approx((0.0075, False))
    assert quantile({0.001: 1.0, float("inf"): 3.0}, 0.99) == (0.001, True)  # beyond the last bound
    assert quantile({0.001: 0.0, float("inf"): 0.0}, 0.5) is None


def test_mix_and_ctr_series():
    samples = [Sample(0.0, {"als": 2.0}, None),
               Sample(10.0, {"als": 5.0, "popular": 1.0}, {"als": (10.0, 1.0)}),
               Sample(20.0, {"als": 5.0, "popular": 1.0}, {"als": (20.0, 4.0)}),  # no answers: no point
               Sample(30.0, {"als": 6.0, "popular": 4.0}, {"als": (20.0, 4.0), "popular": (0.0, 0.0)})]
    assert mix_series(samples) == {"als": [(0.0, 1.0), (10.0, 0.75), (30.0, 0.25)],
                                   "popular": [(10.0, 0.25), (30.0, 0.75)]}
    assert ctr_series(samples) == {"als": [(10.0, 0.1), (20.0, 0.2), (30.0, 0.2)]}


def test_chart_is_self_contained_svg():
    svg = line_chart("t", {"b": [(0.0, 0.5), (60.0, 0.25)], "a": [(30.0, 1.0)]}, percent=True)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    view = PageView(svg)
    assert view.charts == [{"title": "t", "legend": ["a", "b"]}]
    assert "100%" in view.text and view.active == []


def test_sampler_thread_fills_a_bounded_ring(app, client):
    """The worker's thread samples every interval; only the newest ``keep`` stay."""
    client.get("/v1/users/1/recommendations")
    default = status_sampler(app)
    assert default.interval == 10.0
    sampler = StatusSampler(default.metrics, default.state, default.user_endpoint_rule, interval=0.01, keep=3)
    sampler.ensure_started()
    try:
        wait_until(lambda: len(sampler.samples) == 3, message="three samples")
        time.sleep(0.05)
        assert len(sampler.samples) == 3
        latest = sampler.samples[-1]
        assert latest.answers == {"popular": 1.0}
        assert latest.bandit == {"popular": (1.0, 0.0)}
    finally:
        sampler.stop()


def test_sample_interval_is_a_setting(make_app):
    assert status_sampler(make_app(status_sample_seconds=0.5)).interval == 0.5
    with pytest.raises(ValueError, match="status_sample_seconds"):
        make_app(status_sample_seconds=0)


# --- a real gunicorn, seen through headless Chromium -----------------------------------------

CHROMIUM = shutil.which("chromium")


def dump_dom(url: str, profile_dir) -> str:
    """The page's DOM after Chromium loaded and rendered it."""
    result = subprocess.run(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={profile_dir}", "--dump-dom", url],
        capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make system-packages installs it)")
def test_status_page_in_headless_chromium(tmp_path):
    """Two workers serve traffic, a click is rewarded through the shared store; the page
    Chromium renders shows the version, the hit rate over both workers, the fallback
    counts, and both charts with the algorithm names in their legends."""
    publish_snapshot(tmp_path / "snapshots", "v1")
    env = {"RECSYS__SERVER__STATUS_SAMPLE_SECONDS": "0.2"}
    with running_gunicorn(tmp_path, workers=2, extra_env=env) as server:
        server.wait_all_workers_on("v1")
        bodies = [requests.get(f"{server.base_url}/v1/users/{user}/recommendations", timeout=5).json()
                  for user in (1, 1, 1, 5555)]
        store = open_delta_store({}, tmp_path)  # this test's own process: its own environment
        try:  # a click is credited once the worker has written its impression (a batch every 0.25 s)
            deadline = time.monotonic() + 10
            while store.reward(bodies[0]["request_id"]) is None:
                assert time.monotonic() < deadline, "the impression was never written"
                time.sleep(0.05)
        finally:
            store.close()
        time.sleep(0.5)  # a sample or two after the traffic

        view = PageView(dump_dom(f"{server.base_url}/status", tmp_path / "chromium-profile"))
        assert "Snapshot v1" in view.text
        assert "4 answers served" in view.text  # both workers' answers
        assert hit_rate(view) == pytest.approx(75.0)
        assert "/v1/users/<user_id>/recommendations unknown_user 1" in view.text
        mix, ctr = view.charts
        assert mix["legend"] == ["popular", "popular_fallback"]
        assert ctr["legend"] == ["popular", "popular_fallback"]
        assert "heavy popular 3 1 0.3333" in view.text  # user 1 is heavy
        assert view.active == []
