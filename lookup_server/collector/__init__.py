"""Event collector: the write path of the real-time layer.

A WSGI app of its own (``gunicorn -c conf/gunicorn.collector.conf.py``) that takes
events and catalog changes over HTTP, appends them durably to the landing zone the
batch ingest reads (``<data_dir>/landing/<table>/``), then hands them to the
real-time delta store the lookup servers merge into their answers.

Modules: ``config`` (settings), ``auth`` (bearer token), ``parsing`` (bodies ->
validated rows), ``landing_writer`` (durable appends, rotation, crash recovery),
``realtime`` (the delta store, best effort), ``api`` (routes).

Like the rest of ``lookup_server`` it never imports pyspark or ``jobs``.
"""
from __future__ import annotations

import logging
from typing import Mapping

from flask import Flask

from schemas.settings import load_conf

from lookup_server.collector.api import blueprint
from lookup_server.collector.config import LANDING_TABLES, CollectorConfig
from lookup_server.collector.landing_writer import close_all_writers, recover
from lookup_server.collector.parsing import InvalidBatch
from lookup_server.collector.realtime import RealtimeDelta
from lookup_server.collector.state import CollectorState, attach_state, collector_state
from lookup_server.errors import error_body, json_error

__all__ = ["create_collector_app", "collector_state", "load_collector_config", "recover_landing",
           "close_all_writers", "CollectorConfig"]

log = logging.getLogger(__name__)


def load_collector_config(test_config: Mapping | None = None) -> CollectorConfig:
    """``conf/collector.toml`` + environment + ``test_config``, checked (ValueError)."""
    return CollectorConfig.from_conf(load_conf("collector", overrides=test_config))


def create_collector_app(test_config: Mapping | None = None) -> Flask:
    """A Flask app configured from ``conf/collector.toml``, environment, then ``test_config``.

    Refuses to build (ValueError) without a token of at least 16 characters. Publishes
    the landing files that dead processes of this host left hidden; opens nothing
    else (the writers and the delta store open on first use, after any fork).
    """
    config = load_collector_config(test_config)
    recover_landing(config)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    delta = RealtimeDelta(config.delta, config.data_dir, config.delta_enabled,
                          config.breaker_failures, config.breaker_reset_seconds)
    attach_state(app, CollectorState(config=config, delta=delta))
    app.register_blueprint(blueprint)
    app.register_error_handler(InvalidBatch, _invalid_batch)
    app.register_error_handler(Exception, json_error)
    return app


def recover_landing(config: CollectorConfig, recover_all: bool = False) -> None:
    """Publish hidden landing files of dead processes (``recover_all``: of any process;
    only the gunicorn master, before it forks workers, may ask for that)."""
    for table in LANDING_TABLES:
        try:
            recover(config.landing_folder(table), recover_all=recover_all)
        except OSError:  # the files stay hidden for the next sweep; writes report their own errors
            log.exception("recovering landing/%s failed", table)


def _invalid_batch(exc: InvalidBatch):
    return {**error_body(400, exc.description), "errors": exc.errors}, 400
