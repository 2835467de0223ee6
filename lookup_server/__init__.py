"""Lookup server: answers top-k requests from the published LMDB snapshot.

Build the app with ``create_app()``; production runs it under gunicorn
(``gunicorn -c conf/gunicorn.conf.py``), one app per worker process. Nothing is
opened at import: the snapshot watcher starts in the worker (``start_snapshot_watcher``
from gunicorn's post_worker_init, or on the first request).

Never import pyspark or jobs here: this package must start in milliseconds.
"""
from __future__ import annotations

import logging
from typing import Mapping

from flask import Flask

from schemas.settings import data_dir, load_conf

from lookup_server import metrics, status_page
from lookup_server.admin import MAX_BODY_BYTES
from lookup_server.admin import blueprint as admin_blueprint
from lookup_server.api import blueprint
from lookup_server.state import AppState, app_state, attach_state
from lookup_server.config import ServerConfig
from lookup_server.current_snapshot import CurrentSnapshot
from lookup_server.errors import json_error
from lookup_server.json_provider import OrjsonProvider
from lookup_server.policy import OfflinePolicy
from lookup_server.realtime import ProcessDelta

log = logging.getLogger(__name__)

__all__ = ["create_app", "start_snapshot_watcher", "start_status_sampler", "app_state", "ServerConfig",
           "CurrentSnapshot"]


def create_app(test_config: Mapping | None = None) -> Flask:
    """A Flask app configured from ``conf/server.toml``, environment, then ``test_config``."""
    conf = load_conf("server", overrides=test_config)
    config = ServerConfig.from_conf(conf)
    app = Flask(__name__)
    app.json = OrjsonProvider(app)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    snapshot = CurrentSnapshot(config.snapshot_root, config.reload_interval_seconds,
                               config.verify_checksums)
    policy = OfflinePolicy(config.policy_path, config.reload_interval_seconds)
    delta = ProcessDelta(conf.get("delta", {}), conf.get("realtime", {}), data_dir(conf), conf.get("bandit", {}),
                         priors=policy.priors)
    attach_state(app, AppState(config=config, snapshot=snapshot, delta=delta, policy=policy))
    metrics.init_app(app)  # first, so its latency timer starts before the other hooks run
    # Lazily, so building an app (tests, `flask routes`) starts no thread; the pid
    # check inside makes this a no-op after the first request of each process.
    app.before_request(snapshot.ensure_started)
    app.register_blueprint(blueprint)
    app.register_blueprint(admin_blueprint)
    status_page.init_app(app, conf.get("status_sample_seconds", status_page.DEFAULT_SAMPLE_SECONDS))
    app.register_error_handler(Exception, json_error)
    return app


def start_snapshot_watcher(app: Flask, first_check_seconds: float = 10.0) -> None:
    """Start following CURRENT now instead of on the first request (gunicorn's
    post_worker_init), so a worker becomes ready without traffic, and wait for the
    first check, at most ``first_check_seconds``: a worker started under load (one
    replacing a worker that died) then takes no request before its snapshot is in
    service, where it would answer 503 until the check is done (checksums take ~1 s
    per GB). Past the bound it starts anyway, not ready, rather than not at all."""
    snapshot = app_state(app).snapshot
    snapshot.ensure_started()
    if not snapshot.wait_first_check(first_check_seconds):
        log.warning("no snapshot check within %.0f s: taking requests before one is in service",
                    first_check_seconds)


def start_status_sampler(app: Flask) -> None:
    """Start the /status page's sampling thread now instead of on the first request
    (gunicorn's post_worker_init), so its charts start with the worker."""
    status_page.status_sampler(app).ensure_started()
