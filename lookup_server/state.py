"""What the app factory attaches to a Flask app, and how handlers reach it."""
from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app

from lookup_server.config import ServerConfig
from lookup_server.current_snapshot import CurrentSnapshot
from lookup_server.policy import OfflinePolicy
from lookup_server.realtime import ProcessDelta

_EXTENSION_KEY = "lookup_server"


@dataclass(frozen=True)
class AppState:
    config: ServerConfig
    snapshot: CurrentSnapshot
    delta: ProcessDelta
    policy: OfflinePolicy  # the evaluation's verdict: default order and bandit priors


def attach_state(app: Flask, state: AppState) -> None:
    app.extensions[_EXTENSION_KEY] = state


def app_state(app: Flask | None = None) -> AppState:
    """The state of ``app``, or of the app handling the current request."""
    return (current_app if app is None else app).extensions[_EXTENSION_KEY]
