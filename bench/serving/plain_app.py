"""The plain lookup: a Flask app that answers the lookup route with one LMDB read,
the user's first list (20 items), and does nothing else: no real-time delta, no
bandit, no fallback chain, no metrics. Served by the same gunicorn settings as the
lookup server, it is what the framework plus the snapshot read cost, so the run
shows how much of the gap to the floor is reading a list at all and how much is
what our server does around it.

``BENCH_SNAPSHOT`` names the snapshot version folder, ``BENCH_ALGORITHM`` the list
(default ``hybrid``, the lookup server's first preference).
"""
from __future__ import annotations

import os

import lmdb
from flask import Flask

from lookup_server.json_provider import OrjsonProvider
from schemas.snapshot import recs_db_name, unpack_ranked_list, user_key

K = 20


def create_app() -> Flask:
    # Opened here, in each worker (gunicorn forks first): an LMDB environment must not cross a fork.
    env = lmdb.open(os.environ["BENCH_SNAPSHOT"], readonly=True, lock=False, max_dbs=256, readahead=False)
    lists = env.open_db(recs_db_name("user", os.environ.get("BENCH_ALGORITHM", "hybrid")).encode(), create=False)
    app = Flask(__name__)
    app.json = OrjsonProvider(app)  # the lookup server's encoder: only the work around the read differs

    @app.get("/v1/users/<int:user_id>/recommendations")
    def recommendations(user_id: int):
        with env.begin(buffers=True) as txn:
            record = txn.get(user_key(user_id), db=lists)
            ids, scores = unpack_ranked_list(record, K) if record is not None else ((), ())
        return {"user_id": user_id, "items": [{"product_id": p, "score": s} for p, s in zip(ids, scores)]}

    @app.get("/readyz")
    def ready():
        return {"status": "ready", "worker_pid": os.getpid()}

    return app
