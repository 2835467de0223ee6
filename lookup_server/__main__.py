"""Run the lookup server on Flask's development server, for local debugging.

Production: ``gunicorn -c conf/gunicorn.conf.py`` (LOOKUP_BIND, LOOKUP_WORKERS, ...).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from lookup_server import create_app, start_snapshot_watcher


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m lookup_server",
        description="Serve top-k recommendations from the published LMDB snapshot on Flask's "
                    "development server (one process, for local debugging). In production run "
                    "`gunicorn -c conf/gunicorn.conf.py` instead.",
        epilog="Settings come from conf/server.toml; RECSYS_DATA_DIR and "
               "RECSYS__SERVER__<KEY> environment variables override them.")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default: %(default)s)")
    parser.add_argument("--snapshot-root", type=Path,
                        help="folder holding CURRENT and the versions (default: <data_dir>/snapshots)")
    parser.add_argument("--debug", action="store_true", help="Flask debug mode (reloader, debugger)")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {"snapshot_dir": str(args.snapshot_root.resolve())} if args.snapshot_root else None
    app = create_app(overrides)
    start_snapshot_watcher(app)
    app.run(host=args.host, port=args.port, debug=args.debug, use_reloader=args.debug)


if __name__ == "__main__":
    main()
