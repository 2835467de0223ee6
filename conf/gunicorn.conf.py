"""Gunicorn settings for the lookup server: `gunicorn -c conf/gunicorn.conf.py`.

Sync workers: each request is a few LMDB page reads, so there is nothing to wait
on; sync workers gave the best throughput-to-tail ratio on 2 cores.
Every value can be overridden by an environment variable named below.
"""
import multiprocessing
import os

# The factory runs in each worker (preload_app = False below), after the fork.
wsgi_app = "lookup_server:create_app()"
bind = os.environ.get("LOOKUP_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("LOOKUP_WORKERS", multiprocessing.cpu_count()))
worker_class = "sync"
# No preload: the app factory runs in each worker, so LMDB is opened after fork.
preload_app = False
timeout = int(os.environ.get("LOOKUP_TIMEOUT", 30))
graceful_timeout = 10
keepalive = 5
max_requests = 0
accesslog = os.environ.get("LOOKUP_ACCESS_LOG")  # e.g. "-" for stdout; off by default for speed
errorlog = "-"
loglevel = os.environ.get("LOOKUP_LOG_LEVEL", "info")
proc_name = "recsys-lookup"
# gunicorn's control socket defaults to one fixed path per user, which two servers on
# one machine (tests, blue/green) would fight over: off unless a path is given.
_control_socket = os.environ.get("LOOKUP_CONTROL_SOCKET")
if _control_socket:
    control_socket = _control_socket
control_socket_disable = not _control_socket


# prometheus_client multiprocess mode: each worker writes its metrics to files in
# PROMETHEUS_MULTIPROC_DIR and /metrics sums them. Set by the master in on_starting,
# before any worker forks (with preload_app = True it would be too late: the app,
# and prometheus_client with it, would be imported first). An operator may set it
# instead; either way the folder is emptied at start, as counts of a former run
# would otherwise be added to this one's.
_METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"
_created_metrics_dir: list[str] = []  # the folder on_starting made, removed on_exit


def on_starting(server):
    """Give the workers an empty metrics folder (a private temp dir unless one is set)."""
    import glob
    import tempfile

    path = os.environ.get(_METRICS_ENV)
    if path:
        os.makedirs(path, exist_ok=True)
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.remove(stale)
    else:
        path = tempfile.mkdtemp(prefix="recsys-lookup-metrics-")
        _created_metrics_dir.append(path)
        os.environ[_METRICS_ENV] = path
    server.log.info("metrics of the workers in %s", path)


def child_exit(server, worker):
    """A worker is gone: drop its live gauges' files (its counters stay in the totals)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    """Remove the private metrics folder (one the environment named is left in place)."""
    import shutil

    for path in _created_metrics_dir:
        shutil.rmtree(path, ignore_errors=True)


def post_worker_init(worker):
    """Route the app's log to gunicorn's error log, then start following the snapshot
    (and sampling for /status) as soon as the worker has its app, and load the
    snapshot before the worker accepts its first request."""
    import logging

    from lookup_server import start_snapshot_watcher, start_status_sampler

    app_log = logging.getLogger("lookup_server")
    app_log.handlers = list(worker.log.error_log.handlers)
    app_log.setLevel(worker.log.error_log.level)
    app_log.propagate = False
    # Half the timeout at most: the master counts the boot against it (no heartbeat yet).
    start_snapshot_watcher(worker.wsgi, first_check_seconds=worker.cfg.timeout / 2)
    start_status_sampler(worker.wsgi)
