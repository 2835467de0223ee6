"""Gunicorn settings for the lookup server: `gunicorn -c conf/gunicorn.conf.py`.

Sync workers: each request is a few LMDB page reads, so there is nothing to wait
on; sync workers gave the best throughput-to-tail ratio on 2 cores.
Every value can be overridden by an environment variable named below.
"""
import multiprocessing
import os

wsgi_app = "lookup_server.wsgi:app"
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
