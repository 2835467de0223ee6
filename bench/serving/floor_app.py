"""The framework floor: a Flask app that answers the lookup route with a constant
JSON body and does nothing else. Served by the same gunicorn settings as the lookup
server, its throughput is the most ours can reach."""
from __future__ import annotations

from flask import Flask

BODY = {"user_id": 0, "items": [{"product_id": 1, "score": 1.0}], "algorithm": "floor", "fallback": None}


def create_app() -> Flask:
    app = Flask(__name__)

    @app.get("/v1/users/<user_id>/recommendations")
    def hello(user_id: str):
        return BODY

    @app.get("/readyz")
    def ready():
        return {"status": "ready"}

    return app
