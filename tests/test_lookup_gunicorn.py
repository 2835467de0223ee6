"""The lookup server under a real gunicorn with two workers, over HTTP."""
from __future__ import annotations

import requests

from tests.lookup_fixtures import (
    SnapshotContent, publish_snapshot, running_gunicorn,
)


def test_gunicorn_serves_and_both_workers_follow_current(tmp_path):
    """Two real workers answer over HTTP and both switch to a newly published snapshot."""
    root = tmp_path / "snapshots"
    publish_snapshot(root, "v1")
    with running_gunicorn(tmp_path, workers=2) as server:
        workers = server.wait_all_workers_on("v1")

        response = requests.get(f"{server.base_url}/v1/users/1/recommendations?k=3", timeout=5)
        assert response.status_code == 200
        body = response.json()
        assert [i["product_id"] for i in body["items"]] == [10, 11, 12]
        assert (body["algorithm"], body["snapshot_version"]) == ("popular", "v1")
        bad = requests.get(f"{server.base_url}/v1/users/abc/recommendations", timeout=5)
        assert bad.status_code == 400 and bad.json()["error"]["code"] == 400

        content = SnapshotContent()
        content.user_lists["popular"][1] = [(15, 3.0), (14, 2.0)]
        publish_snapshot(root, "v2", content)
        assert server.wait_all_workers_on("v2") == workers  # switched, not restarted

        for _ in range(6):
            body = requests.get(f"{server.base_url}/v1/users/1/recommendations", timeout=5).json()
            assert (body["snapshot_version"], [i["product_id"] for i in body["items"]]) == ("v2", [15, 14])
    assert server.process.returncode is not None


def test_gunicorn_not_ready_without_snapshot(tmp_path):
    """With nothing published, a live gunicorn answers /healthz 200 and /readyz 503 JSON."""
    with running_gunicorn(tmp_path, workers=1) as server:
        assert requests.get(f"{server.base_url}/healthz", timeout=5).json() == {"status": "ok"}
        response = requests.get(f"{server.base_url}/readyz", timeout=5)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == 503
