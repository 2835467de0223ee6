"""The plain lookup's gunicorn settings: exactly the lookup server's
(conf/gunicorn.conf.py), serving bench.serving.plain_app instead, without the
lookup server's hooks."""
from pathlib import Path

_shipped = Path(__file__).resolve().parents[2] / "conf" / "gunicorn.conf.py"
exec(compile(_shipped.read_text(), str(_shipped), "exec"))  # the same workers, class, keep-alive, ...

wsgi_app = "bench.serving.plain_app:create_app()"
proc_name = "recsys-plain"


def post_worker_init(worker):
    """No snapshot watcher or status sampler: the plain app has neither."""
