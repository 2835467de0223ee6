"""Arguments and logging shared by every job's ``main()``."""
from __future__ import annotations

import argparse
import logging
from datetime import datetime, timezone


def parse_as_of(text: str) -> datetime:
    """ISO-8601 time (naive means UTC) for --as-of."""
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {text!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default, except None (which means "from conf")."""

    def _get_help_string(self, action):
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def job_parser(description: str) -> argparse.ArgumentParser:
    """A parser with the options every job takes: --data-dir, --as-of, --log-level."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--data-dir", help="root of landing/, lake/, checkpoints/, snapshots/ "
                        "(default: data_dir in conf/jobs.toml, or $RECSYS_DATA_DIR)")
    parser.add_argument("--as-of", type=parse_as_of, default=None,
                        help="the run's logical time, ISO-8601 (default: now, UTC). Rows are judged and "
                             "decayed relative to it, so re-running with the same value gives the same result")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def data_paths(settings: dict, override: str | None):
    """The run's ``DataPaths`` (--data-dir, else conf), checked before any work: a store
    that cannot be reached stops the job at once, in one line naming the URL and why."""
    from schemas.storage import StorageError, check_reachable

    from jobs.paths import DataPaths

    paths = DataPaths.from_settings(settings, override)
    try:
        check_reachable(paths.root)
    except StorageError as exc:
        logging.getLogger("jobs").error("%s", exc)
        raise SystemExit(f"error: {exc}") from None
    return paths


def resolve_as_of(as_of: datetime | None) -> datetime:
    return as_of or datetime.now(timezone.utc).replace(microsecond=0)


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)


def run_algorithm_job(argv: list[str] | None, description: str, algorithm: str, section: str,
                      params_from_settings, run) -> int:
    """The ``main()`` of an algorithm job: parse the common options, build the session,
    ``run(spark, paths, as_of, params)`` with params from conf [section] (overlaid by the
    last tuning run's winners, see jobs.tuned), print its result."""
    import json

    from schemas.settings import load_conf

    from jobs.spark_session import get_spark
    from jobs.tuned import with_tuned

    args = job_parser(description).parse_args(argv)
    configure_logging(args.log_level)
    settings = load_conf("jobs")
    paths = data_paths(settings, args.data_dir)
    settings = with_tuned(settings, paths.root)
    spark = get_spark(f"recsys-{algorithm}")
    result = run(spark, paths, resolve_as_of(args.as_of), params_from_settings(settings[section]))
    print(json.dumps({"algorithm": algorithm, "result": result}))
    return 0
