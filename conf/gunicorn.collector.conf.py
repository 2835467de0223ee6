"""Gunicorn settings for the event collector: `gunicorn -c conf/gunicorn.collector.conf.py`.

Sync workers: a request is one validation pass, one fsync'd append and a few store
writes; there is nothing to overlap. Every value can be overridden by an environment
variable named below. The hooks make the landing zone crash-safe around workers:

- on_starting (master, before any worker): check the settings (no token -> the
  master refuses to start) and publish every hidden file a previous run left;
- worker_exit (worker): publish the worker's open landing files;
- child_exit (master): publish what a dead worker (killed, crashed) left hidden;
- on_exit (master): the same sweep once every worker is gone.
"""
import os

# The factory runs in each worker (preload_app = False below), after the fork.
wsgi_app = "lookup_server.collector:create_collector_app()"
bind = os.environ.get("COLLECTOR_BIND", "127.0.0.1:8001")
workers = int(os.environ.get("COLLECTOR_WORKERS", 2))
worker_class = "sync"
# No preload: landing files and the LMDB delta store are opened in each worker.
preload_app = False
timeout = int(os.environ.get("COLLECTOR_TIMEOUT", 30))
graceful_timeout = 10
keepalive = 5
max_requests = 0
accesslog = os.environ.get("COLLECTOR_ACCESS_LOG")  # e.g. "-" for stdout; off by default
errorlog = "-"
loglevel = os.environ.get("COLLECTOR_LOG_LEVEL", "info")
proc_name = "recsys-collector"
# Off unless a path is given, so a collector and a lookup server on one machine
# do not fight over gunicorn's default control socket.
_control_socket = os.environ.get("COLLECTOR_CONTROL_SOCKET")
if _control_socket:
    control_socket = _control_socket
control_socket_disable = not _control_socket


def _route_app_log(gunicorn_log):
    """Send the collector's log (``lookup_server.*``) to gunicorn's error log."""
    import logging

    app_log = logging.getLogger("lookup_server")
    app_log.handlers = list(gunicorn_log.error_log.handlers)
    app_log.setLevel(gunicorn_log.error_log.level)
    app_log.propagate = False


def on_starting(server):
    from lookup_server.collector import load_collector_config, recover_landing

    _route_app_log(server.log)
    try:
        config = load_collector_config()
    except ValueError as exc:  # no token, a bad key: the master stops before any worker
        server.log.error("collector not started: %s", exc)
        raise SystemExit(1) from exc
    recover_landing(config, recover_all=config.recover_all_at_start)


def post_worker_init(worker):
    _route_app_log(worker.log)


def worker_exit(server, worker):
    from lookup_server.collector import close_all_writers

    close_all_writers()  # a no-op in the master (it calls this hook too, for vanished workers)


def _sweep(server):
    from lookup_server.collector import load_collector_config, recover_landing

    try:
        recover_landing(load_collector_config())
    except Exception:
        server.log.exception("landing recovery failed")


def child_exit(server, worker):
    _sweep(server)


def on_exit(server):
    _sweep(server)
