"""Impressions queued per worker and written in batches (lookup_server/impressions.py)."""
from __future__ import annotations

import threading
import time

from lookup_server.delta import Served
from lookup_server.delta.lmdb_store import LmdbDeltaStore
from lookup_server.impressions import MAX_QUEUED, ImpressionQueue
from lookup_server.state import app_state
from tests.lookup_fixtures import publish_snapshot

SERVED = Served("als", "light", 7)


class RecordingWriter:
    def __init__(self, accept: bool = True):
        self.batches: list[list[tuple[str, Served]]] = []
        self.accept = accept
        self.written = threading.Event()

    def __call__(self, batch) -> bool:
        self.batches.append(list(batch))
        self.written.set()
        return self.accept


def test_zero_seconds_writes_each_impression_at_once():
    writer = RecordingWriter()
    queue = ImpressionQueue(writer, flush_seconds=0)
    assert queue.add("r1", SERVED) and queue.add("r2", SERVED)
    assert writer.batches == [[("r1", SERVED)], [("r2", SERVED)]]


def test_impressions_queue_then_go_out_in_one_batch():
    writer = RecordingWriter()
    queue = ImpressionQueue(writer, flush_seconds=0.05)
    for i in range(5):
        assert queue.add(f"r{i}", SERVED)
    assert writer.written.wait(5), "the writer thread never flushed"
    queue.close()
    assert [rid for batch in writer.batches for rid, _ in batch] == [f"r{i}" for i in range(5)]
    assert len(writer.batches[0]) == 5


def test_close_writes_what_is_left():
    writer = RecordingWriter()
    queue = ImpressionQueue(writer, flush_seconds=3600)
    queue.add("r1", SERVED)
    assert writer.batches == []
    queue.close()
    assert writer.batches == [[("r1", SERVED)]]


def test_a_full_queue_drops_new_impressions_and_counts_them():
    queue = ImpressionQueue(RecordingWriter(), flush_seconds=3600)
    queue._queued = [("old", SERVED)] * MAX_QUEUED  # a store that has been failing for a while
    assert not queue.add("new", SERVED)
    assert queue.dropped == 1


def test_a_refused_batch_is_dropped_not_retried():
    writer = RecordingWriter(accept=False)
    queue = ImpressionQueue(writer, flush_seconds=3600)
    queue.add("r1", SERVED)
    assert not queue.flush()
    assert queue.flush()  # nothing left
    assert writer.batches == [[("r1", SERVED)]]


def test_batched_impressions_reach_the_store_and_can_be_rewarded(make_app, snapshot_root):
    """Through the app: answers are counted once the worker's writer has flushed, in one
    LMDB transaction, and a click on a flushed request_id is credited once."""
    publish_snapshot(snapshot_root, "v1")
    app = make_app(delta={"impression_flush_seconds": 0.05}, bandit={"enabled": True, "refresh_seconds": 0})
    assert app_state(app).snapshot.refresh()
    client = app.test_client()
    request_ids = [client.get("/v1/users/2/recommendations").get_json()["request_id"] for _ in range(10)]
    store: LmdbDeltaStore = app_state(app).delta.context().store
    deadline = time.monotonic() + 5
    while sum(i for i, _ in store.bandit_counts().values()) < 10 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sum(i for i, _ in store.bandit_counts().values()) == 10
    assert store.reward(request_ids[3]) is not None
    assert store.reward(request_ids[3]) is None
    assert sum(r for _, r in store.bandit_counts().values()) == 1.0


def test_a_stopped_queue_ends_its_thread():
    """A worker that reopens its delta store stops the old queue's writer thread."""
    queue = ImpressionQueue(RecordingWriter(), flush_seconds=0.01)
    queue.add("r1", SERVED)
    queue.stop()
    queue._thread.join(timeout=5)
    assert not queue._thread.is_alive()
