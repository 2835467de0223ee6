"""Run the whole batch pipeline in one Spark session: ingest -> popularity -> snapshot.

The scheduler runs these as separate tasks; this entry point is for the demo, for
tests and for a one-off rebuild by hand.

Run: ``python -m jobs.run_pipeline --help`` or ``spark-submit jobs/run_pipeline.py --help``.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict

from schemas.settings import load_conf

from jobs.build_snapshot import build_snapshot
from jobs.cli import configure_logging, job_parser, resolve_as_of
from jobs.ingest import run_ingest
from jobs.paths import DataPaths
from jobs.popularity import params_from_settings, run_popularity
from jobs.spark_session import get_spark

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = job_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--no-publish", action="store_true", help="build the snapshot but leave CURRENT alone")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    settings = load_conf("jobs")
    paths = DataPaths.from_settings(settings, args.data_dir)
    as_of = resolve_as_of(args.as_of)
    spark = get_spark("recsys-pipeline")
    summary: dict = {"as_of": as_of.isoformat()}

    started = time.monotonic()
    log.info("[1/3] ingest from %s", paths.landing)
    summary["ingest"] = {k: asdict(v) for k, v in run_ingest(spark, paths, as_of, settings["ingest"]).items()}
    log.info("[2/3] popularity (%.0f s so far)", time.monotonic() - started)
    summary["popularity_lists"] = run_popularity(spark, paths, as_of, params_from_settings(settings["popularity"]))
    log.info("[3/3] snapshot (%.0f s so far)", time.monotonic() - started)
    manifest = build_snapshot(spark, paths, as_of, settings["snapshot"], do_publish=not args.no_publish)
    summary["snapshot"] = {"version": manifest.version, "databases": manifest.databases,
                           "published": not args.no_publish}
    summary["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
