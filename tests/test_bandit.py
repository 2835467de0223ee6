"""Algorithm switching: Thompson sampling on shared counts, priors from policy.json,
the admin pin, and a simulation with real gunicorn, the real collector and real Redis."""
from __future__ import annotations

import json
import random
import time
from collections import Counter

import pytest
import requests

from lookup_server import app_state
from lookup_server.bandit import (
    HEAVY, KNOWN, LIGHT, NEW, Bandit, BanditSettings, prior_rates, serving_segment,
)
from lookup_server.delta import Served
from lookup_server.policy import OfflinePolicy

from tests.collector_fixtures import TOKEN, running_collector
from tests.lookup_fixtures import SnapshotContent, publish_snapshot, running_gunicorn

ADMIN = "admin-token-0123456789"


def bandit(counts=None, pinned=None, priors=None, seed=1):
    return Bandit(BanditSettings(refresh_seconds=0), lambda: priors or {},
                  read_counts=lambda: counts or {}, read_pinned=lambda: pinned, rng=random.Random(seed))


def shares(chooser, n=2000, algorithms=("als", "content")) -> Counter:
    return Counter(chooser.choose(KNOWN, list(algorithms)) for _ in range(n))


def test_evidence_moves_traffic_to_the_better_algorithm():
    counts = {(KNOWN, "als"): (1000.0, 120.0), (KNOWN, "content"): (1000.0, 40.0)}
    picked = shares(bandit(counts))
    assert picked["als"] > 0.95 * sum(picked.values())


def test_without_evidence_or_policy_both_are_tried():
    picked = shares(bandit())
    assert min(picked.values()) > 0.3 * sum(picked.values())


def test_offline_priors_tilt_the_start_and_evidence_overrides_them():
    priors = {"all": {"als": 0.3, "content": 0.03}}
    assert prior_rates(priors["all"], ["als", "content", "hybrid"], 0.05) == pytest.approx(
        {"als": 0.05, "content": 0.005, "hybrid": 0.0275})
    start = shares(bandit(priors=priors))
    assert start["als"] > start["content"]
    counts = {(KNOWN, "als"): (5000.0, 50.0), (KNOWN, "content"): (5000.0, 600.0)}
    later = shares(bandit(counts, priors=priors))
    assert later["content"] > 0.95 * sum(later.values())


def test_a_new_policy_replaces_the_remembered_prior_rates():
    """The chooser keeps each segment's prior rates; a new priors object (policy.json
    rewritten) is used from the next request on."""
    policies = [{"all": {"als": 0.3, "content": 0.001}}]
    chooser = Bandit(BanditSettings(refresh_seconds=0, prior_impressions=5000.0), lambda: policies[-1],
                     read_counts=dict, read_pinned=lambda: None, rng=random.Random(2))
    assert shares(chooser, 300)["als"] == 300
    policies.append({"all": {"als": 0.001, "content": 0.3}})
    assert shares(chooser, 300)["content"] == 300


def test_a_pin_answers_everything():
    assert set(shares(bandit(pinned="content"))) == {"content"}
    assert set(shares(bandit(pinned="gone"))) == {"als", "content"}  # a pin not in the snapshot is ignored


def test_the_policy_follows_the_file(tmp_path):
    path = tmp_path / "policy.json"
    policy = OfflinePolicy(path, check_seconds=0)
    assert policy.priors() == {} and policy().order(["hybrid", "als"]) == ("hybrid", "als")
    path.write_text(json.dumps({"priors": {"all": {"als": 0.2, "hybrid": 0.1}}, "preference": ["als", "hybrid"]}))
    assert policy.priors() == {"all": {"als": 0.2, "hybrid": 0.1}}
    # The measured order leads; what the evaluation did not score keeps its configured place after.
    assert policy().order(["ranked", "hybrid", "als", "popular"]) == ("als", "hybrid", "ranked", "popular")
    path.write_text("{broken")
    time.sleep(0.01)
    assert policy.priors() == {} and policy().order(["hybrid", "als"]) == ("hybrid", "als")


def test_every_answer_counts_an_impression_a_reward_counts_once(make_app, snapshot_root):
    """User 2 has lists and the snapshot records them as light: the light segment counts."""
    publish_snapshot(snapshot_root, "v1")
    app = make_app(bandit={"enabled": True, "refresh_seconds": 0})
    assert app_state(app).snapshot.refresh()
    client = app.test_client()
    answers = [client.get("/v1/users/2/recommendations").get_json() for _ in range(20)]
    assert {a["algorithm"] for a in answers} <= {"als", "popular"}
    store = app_state(app).delta.context().store
    counts = store.bandit_counts()
    assert sum(i for (segment, _), (i, _) in counts.items() if segment == LIGHT) == 20
    first = answers[0]
    assert store.reward(first["request_id"], 4.0) == Served(first["algorithm"], LIGHT, 2)
    assert store.reward(first["request_id"], 4.0) is None
    assert store.bandit_counts()[(LIGHT, first["algorithm"])][1] == 4.0


@pytest.mark.parametrize("activity, personalised, expected", [
    ("light", True, LIGHT), ("heavy", True, HEAVY), ("new", True, KNOWN), (None, True, KNOWN),
    ("heavy", False, NEW), (None, False, NEW),
])
def test_serving_segment(activity, personalised, expected):
    assert serving_segment(activity, personalised) == expected


def test_each_activity_segment_draws_on_its_own_priors_and_counts(tmp_path):
    """Heavy users' evidence says content, light users' priors say ALS: each segment
    follows its own, so the same chooser answers them differently."""
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"priors": {"light": {"als": 0.4, "content": 0.02},
                                             "heavy": {"als": 0.3, "content": 0.3}}}))
    counts = {(HEAVY, "als"): (4000.0, 40.0), (HEAVY, "content"): (4000.0, 800.0)}
    chooser = Bandit(BanditSettings(prior_impressions=200.0), OfflinePolicy(policy).priors, lambda: counts,
                     lambda: None, rng=random.Random(3))
    light = Counter(chooser.segment_and_order(["als", "content"], ["als", "content"], "light")[1][0] for _ in range(300))
    heavy = Counter(chooser.segment_and_order(["als", "content"], ["als", "content"], "heavy")[1][0] for _ in range(300))
    assert light["als"] > 270 and heavy["content"] > 270
    assert chooser.segment_and_order([], ["als", "content"], "heavy") == (NEW, ("als", "content"))


def test_admin_pin_needs_the_token_and_pins(make_app, snapshot_root, monkeypatch):
    publish_snapshot(snapshot_root, "v1")
    app = make_app(bandit={"enabled": True, "refresh_seconds": 0})
    assert app_state(app).snapshot.refresh()
    client = app.test_client()
    assert client.put("/v1/admin/pin", json={"algorithm": "als"}).status_code == 403  # disabled
    monkeypatch.setenv("LOOKUP_ADMIN_TOKEN", ADMIN)
    assert client.put("/v1/admin/pin", json={"algorithm": "als"}).status_code == 401
    wrong = client.put("/v1/admin/pin", json={"algorithm": "als"}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403 and wrong.is_json
    auth = {"Authorization": f"Bearer {ADMIN}"}
    assert client.put("/v1/admin/pin", json={"algorithm": "bogus"}, headers=auth).status_code == 400
    assert client.put("/v1/admin/pin", json={"algorithm": "popular"}, headers=auth).get_json() == {"pinned": "popular"}
    assert {client.get("/v1/users/2/recommendations").get_json()["algorithm"] for _ in range(10)} == {"popular"}
    assert client.delete("/v1/admin/pin", headers=auth).get_json() == {"pinned": None}
    assert client.get("/v1/admin/pin", headers=auth).get_json() == {"pinned": None}


# --- the simulation ------------------------------------------------------------

USERS = range(1, 41)
ROUNDS = 15  # requests per user
K = 5


def simulated_world():
    """Each user likes 5 hidden products. ALS lists them (2 of the top 5); content lists
    products nobody likes. Priors are equal: only the clicks can tell them apart."""
    rng = random.Random(7)
    tastes, als, content = {}, {}, {}
    for user in USERS:
        liked = rng.sample(range(100, 200), 5)
        tastes[user] = set(liked)
        filler = [p for p in rng.sample(range(200, 300), 10)]
        als[user] = [(p, 1.0 - i / 20) for i, p in enumerate([liked[0], filler[0], liked[1]] + filler[1:8])]
        content[user] = [(p, 1.0 - i / 20) for i, p in enumerate(rng.sample(range(300, 400), 10))]
    products = {p: ("c", 1.0, True) for p in range(100, 400)}
    return tastes, SnapshotContent(user_lists={"als": als, "content": content}, product_lists={},
                                   category_lists={}, global_popular=[(100, 1.0)], products=products)


@pytest.mark.e2e
def test_simulated_users_shift_traffic_to_the_algorithm_that_serves_them(tmp_path, redis_server):
    """Real gunicorn (2 workers) and the real collector share a real Redis: users click
    what they like, the collector credits the answering algorithm through request_id,
    and within 600 requests most traffic goes to ALS."""
    tastes, content = simulated_world()
    publish_snapshot(tmp_path / "snapshots", "v1", content)
    env = {"RECSYS__SERVER__DELTA__REDIS_URL": f'"{redis_server.url}"',
           "RECSYS__COLLECTOR__DELTA__REDIS_URL": f'"{redis_server.url}"',
           "RECSYS__SERVER__DELTA__TIMEOUT_MS": "500", "RECSYS__COLLECTOR__DELTA__TIMEOUT_MS": "500",
           "RECSYS__SERVER__BANDIT__REFRESH_SECONDS": "0.2",
           "RECSYS__SERVER__REALTIME__EXPLORATION_SHARE": "0.0"}
    served = []
    with running_gunicorn(tmp_path, extra_env=env) as lookup, \
            running_collector(tmp_path, extra_env=env) as collector:
        lookup.wait_all_workers_on("v1")
        session = requests.Session()
        for round_ in range(ROUNDS):
            clicks = []
            for user in USERS:
                body = session.get(f"{lookup.base_url}/v1/users/{user}/recommendations?k={K}", timeout=5).json()
                assert not body["degraded"], body
                served.append(body["algorithm"])
                for item in body["items"]:
                    if item["product_id"] in tastes[user]:
                        clicks.append({"user_id": user, "event_type": "click", "product_id": item["product_id"],
                                       "request_id": body["request_id"]})
                        break
            if clicks:
                answer = session.post(f"{collector.base_url}/v1/events", json=clicks, timeout=5,
                                      headers={"Authorization": f"Bearer {TOKEN}"})
                assert answer.status_code == 202 and answer.json()["realtime"] is True, answer.text
            time.sleep(0.25)  # let the workers' cached counts refresh between rounds
    first, last = Counter(served[:len(USERS)]), Counter(served[-3 * len(USERS):])
    assert len(served) == ROUNDS * len(USERS)
    assert first["content"] > 0.2 * len(USERS)           # both were tried at the start
    assert last["als"] > 0.8 * sum(last.values()), (first, last)
