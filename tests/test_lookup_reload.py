"""Following CURRENT: new versions are swapped in without restart, broken ones are
refused while the previous version keeps serving."""
from __future__ import annotations

import logging
import weakref

import pytest

from tests.lookup_fixtures import (
    SnapshotContent, build_snapshot, flip_data_byte, point_current_at, publish_snapshot,
    remove_manifest, truncate_data_file, wait_until, zero_data_file,
)
from lookup_server import app_state, start_snapshot_watcher
from lookup_server.snapshot_reader import open_snapshot
from schemas.snapshot import SCORE_RELATIVE_ERROR


def _content_with_user_1(items) -> SnapshotContent:
    content = SnapshotContent()
    content.user_lists["popular"][1] = items
    return content


def _served_version(client) -> str | None:
    response = client.get("/readyz")
    return response.get_json()["snapshot_version"] if response.status_code == 200 else None


def _user_1_ids(client) -> list[int]:
    body = client.get("/v1/users/1/recommendations").get_json()
    return [item["product_id"] for item in body["items"]]


def _serving_v2(make_app, snapshot_root, **overrides):
    """An app whose watcher has moved from v1 to v2 (v2: user 1 gets [14, 15])."""
    publish_snapshot(snapshot_root, "v1")
    app = make_app(**overrides)
    client = app.test_client()
    wait_until(lambda: _served_version(client) == "v1", message="v1 in service")
    publish_snapshot(snapshot_root, "v2", _content_with_user_1([(14, 2.0), (15, 1.0)]))
    wait_until(lambda: _served_version(client) == "v2", message="v2 in service")
    return app, client


def test_new_version_served_without_restart(make_app, snapshot_root):
    """Publishing v2 switches readiness and answers to v2 in the running app."""
    app, client = _serving_v2(make_app, snapshot_root)
    assert _user_1_ids(client) == [14, 15]
    assert client.get("/v1/users/1/recommendations").get_json()["snapshot_version"] == "v2"
    assert app_state(app).snapshot.rejected_count == 0


def test_first_publish_makes_app_ready(make_app, snapshot_root):
    """An app started before any snapshot becomes ready once one is published."""
    client = make_app().test_client()
    assert client.get("/readyz").status_code == 503  # also starts the watcher
    publish_snapshot(snapshot_root, "v1")
    wait_until(lambda: _served_version(client) == "v1", message="v1 in service")
    assert client.get("/v1/users/1/recommendations").status_code == 200


BREAKAGES = {  # damage, app settings, what the message says, the reason's one word
    "truncated data file": (truncate_data_file, {}, "manifest says", "size_mismatch"),
    "checksum mismatch": (flip_data_byte, {}, "checksum mismatch", "checksum_mismatch"),
    "missing manifest": (remove_manifest, {}, "no manifest.json", "no_manifest"),
    "not an LMDB file": (zero_data_file, {"verify_checksums": False}, "LMDB cannot open", "not_lmdb"),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_broken_version_rejected_old_keeps_serving(make_app, snapshot_root, caplog, breakage):
    """A broken v3 is refused with a WARNING saying why; v2 keeps answering; v4 still loads."""
    damage, overrides, reason, reason_code = BREAKAGES[breakage]
    app, client = _serving_v2(make_app, snapshot_root, **overrides)
    snapshot = app_state(app).snapshot
    caplog.set_level(logging.WARNING, logger="lookup_server")

    damage(build_snapshot(snapshot_root, "v3"))
    point_current_at(snapshot_root, "v3")
    wait_until(lambda: snapshot.rejected_count == 1, message="v3 rejected")

    assert _served_version(client) == "v2"
    assert _user_1_ids(client) == [14, 15]
    assert reason in snapshot.last_rejection
    assert snapshot.rejected_by_reason == {reason_code: 1}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"v3 ({reason_code})" in m and reason in m and "still serving v2" in m for m in warnings), warnings
    assert snapshot.refresh() is False and snapshot.rejected_count == 1  # not retried unchanged

    publish_snapshot(snapshot_root, "v4")
    wait_until(lambda: _served_version(client) == "v4", message="v4 in service after a rejection")


def test_old_reader_usable_after_swap_then_freed(make_app, snapshot_root):
    """A request holding v1 across the swap still reads v1; v1 closes once nobody holds it."""
    publish_snapshot(snapshot_root, "v1")
    snapshot = app_state(make_app()).snapshot  # no request: no watcher thread, refresh by hand
    assert snapshot.refresh()
    held = snapshot.reader
    publish_snapshot(snapshot_root, "v2", _content_with_user_1([(14, 2.0)]))
    assert snapshot.refresh()

    assert snapshot.reader.version == "v2"
    assert held.user_list("popular", 1, 2) == ((10, 11), pytest.approx((0.9, 0.8), rel=SCORE_RELATIVE_ERROR))
    reader_ref, env_ref = weakref.ref(held), weakref.ref(held._env)
    del held
    assert reader_ref() is None and env_ref() is None  # freed by refcount, no gc needed

    point_current_at(snapshot_root, "v1")  # rollback: v1 can be opened again
    assert snapshot.refresh() and snapshot.reader.version == "v1"


def test_rollback_to_a_reader_still_held_shares_it(make_app, snapshot_root):
    """Going back to a version some request still holds reuses that reader (LMDB forbids a second open)."""
    publish_snapshot(snapshot_root, "v1")
    snapshot = app_state(make_app()).snapshot
    snapshot.refresh()
    held = snapshot.reader
    publish_snapshot(snapshot_root, "v2")
    snapshot.refresh()
    point_current_at(snapshot_root, "v1")
    assert snapshot.refresh()
    assert snapshot.reader is held
    assert open_snapshot(snapshot_root / "v1") is held


def test_current_naming_a_path_outside_root_is_rejected(make_app, snapshot_root):
    """CURRENT must name a folder of the root, not a path."""
    publish_snapshot(snapshot_root, "v1")
    snapshot = app_state(make_app()).snapshot
    snapshot.refresh()
    point_current_at(snapshot_root, "../elsewhere")
    assert snapshot.refresh() is False
    assert snapshot.reader.version == "v1" and snapshot.rejected_by_reason == {"bad_pointer": 1}


def test_watcher_thread_started_once(make_app, snapshot_root):
    """Many requests in one process start exactly one watcher thread, and close() stops it."""
    import threading

    def watchers():
        return [t for t in threading.enumerate() if t.name == "snapshot-watcher" and t.is_alive()]

    before = len(watchers())
    app = make_app()
    client = app.test_client()
    for _ in range(5):
        client.get("/healthz")
    assert len(watchers()) == before + 1
    app_state(app).snapshot.close()
    assert len(watchers()) == before


def test_start_snapshot_watcher_returns_with_the_snapshot_in_service(make_app, snapshot_root):
    """gunicorn's post_worker_init calls it: a worker takes no request before v1 serves."""
    publish_snapshot(snapshot_root, "v1")
    app = make_app()
    start_snapshot_watcher(app)
    assert app_state(app).snapshot.reader.version == "v1"


def test_malformed_record_rejected_at_open(make_app, snapshot_root):
    """A checksummed snapshot whose list record breaks the layout is refused when opened."""
    from jobs.snapshot_writer import SnapshotWriter, publish
    from schemas.snapshot import Manifest, user_key

    with SnapshotWriter(snapshot_root, "v1", map_size_bytes=16 << 20) as writer:
        writer.put("recs/user/popular", user_key(1), b"\x07not a ranked list")
        writer.finish(Manifest(version="", created_at="", as_of=""))
    publish(snapshot_root, "v1")
    snapshot = app_state(make_app()).snapshot
    assert snapshot.refresh() is False
    assert snapshot.reader is None and "layout" in snapshot.last_rejection
    assert snapshot.rejected_by_reason == {"bad_contents": 1}
