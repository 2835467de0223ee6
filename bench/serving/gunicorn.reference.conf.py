"""The reference servers' gunicorn settings: exactly the lookup server's
(conf/gunicorn.conf.py), serving another app without the lookup server's hooks.
``BENCH_APP`` names the app: the floor (``floor_app``, the default) or the plain
lookup (``plain_app``)."""
import os
from pathlib import Path

_shipped = Path(__file__).resolve().parents[2] / "conf" / "gunicorn.conf.py"
exec(compile(_shipped.read_text(), str(_shipped), "exec"))  # the same workers, class, keep-alive, ...

_app = os.environ.get("BENCH_APP", "floor_app")
wsgi_app = f"bench.serving.{_app}:create_app()"
proc_name = f"recsys-{_app}"


def post_worker_init(worker):
    """No snapshot watcher or status sampler: the reference apps have neither."""
