"""``python -m bench.quality``: run the protocols, print the tables, write
``quality.json`` and ``quality.md``. Progress goes to stderr, the tables to stdout.

Settings are conf/jobs.toml as it stands (no tuned.json): the benchmark measures
the configuration in the repository, except where a protocol tunes its own.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from schemas.settings import PROJECT_ROOT, load_conf

from jobs.cli import configure_logging
from jobs.spark_session import get_spark

from bench.quality import __doc__ as DESCRIPTION
from bench.quality.datasets import default_data_root, load_movielens, load_online_retail, load_taobao
from bench.quality.environment import environment
from bench.quality.protocols import (
    PROTOCOLS, QUICK_TUNING_BUDGET, TUNING_BUDGET, Protocol, RunOptions, run_protocol,
)
from bench.quality.report import markdown, write_report
from bench.quality.timing import timed

DEFAULT_OUT = PROJECT_ROOT / "bench" / "results"
# A smoke run must not overwrite the real figures unless asked to (--out).
QUICK_OUT = Path(tempfile.gettempdir()) / "bench-quality-quick"
LOADERS = {
    "taobao": lambda spark, args: load_taobao(spark, args.data_root),
    "online-retail": lambda spark, args: load_online_retail(spark, args.data_root),
    "movielens": lambda spark, args: load_movielens(spark, args.movielens),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.quality", description=DESCRIPTION.split("\n\n")[0])
    p.add_argument("--data-root", type=Path, default=default_data_root(),
                   help="folder holding taobao-userbehavior-sample/ and online-retail/ "
                        "(default: $RECSYS_SHARED_DATA, else ../shared/data beside the repository)")
    p.add_argument("--movielens", type=Path, default=None,
                   help="a MovieLens u.data or ratings.dat (or its folder); adds the movielens-random protocol")
    p.add_argument("--protocols", nargs="+", choices=sorted(PROTOCOLS), default=None,
                   help="protocols to run (default: the Taobao and Online Retail ones, and movielens-random "
                        "with --movielens)")
    p.add_argument("--out", type=Path, default=None,
                   help=f"folder for quality.json and quality.md (default: bench/results; with --quick {QUICK_OUT})")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: fewer ALS iterations and a smaller tuning budget (not the real figures)")
    p.add_argument("--threads", type=int, default=None,
                   help="implicit's threads (default: the machine's cores, as Spark's local[*] uses)")
    p.add_argument("--tuning-minutes", type=float, default=None,
                   help=f"movielens-random tuning budget "
                        f"(default {TUNING_BUDGET[0]:g}, --quick {QUICK_TUNING_BUDGET[0]:g})")
    p.add_argument("--tuning-trials", type=int, default=None,
                   help=f"tuning trials per algorithm, conf's own included "
                        f"(default {TUNING_BUDGET[1]}, --quick {QUICK_TUNING_BUDGET[1]})")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="progress on stderr (default: INFO)")
    return p


def selected_protocols(args: argparse.Namespace, p: argparse.ArgumentParser) -> list[Protocol]:
    names = args.protocols or [name for name, protocol in PROTOCOLS.items()
                               if protocol.dataset != "movielens" or args.movielens]
    protocols = [PROTOCOLS[name] for name in names]
    if any(protocol.dataset == "movielens" for protocol in protocols) and not args.movielens:
        p.error("movielens-random needs --movielens PATH (a u.data or ratings.dat; none ships with the repo)")
    return protocols


def run_options(args: argparse.Namespace) -> RunOptions:
    minutes, trials = QUICK_TUNING_BUDGET if args.quick else TUNING_BUDGET
    return RunOptions(
        threads=args.threads or os.cpu_count() or 1, quick=args.quick,
        tuning_minutes=minutes if args.tuning_minutes is None else args.tuning_minutes,
        tuning_trials=trials if args.tuning_trials is None else args.tuning_trials)


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    configure_logging(args.log_level)
    protocols = selected_protocols(args, p)
    options = run_options(args)
    spark = get_spark("bench-quality")
    conf = load_conf("jobs")
    datasets, runs = {}, []
    for protocol in protocols:
        if protocol.dataset not in datasets:
            with timed(f"loading {protocol.dataset}"):
                datasets[protocol.dataset] = LOADERS[protocol.dataset](spark, args)
        with timed(f"protocol {protocol.name}"):
            runs.append(run_protocol(protocol, datasets[protocol.dataset], conf, options))
    env = {**environment(spark.version), "options": asdict(options)}
    json_path, md_path = write_report(args.out or (QUICK_OUT if args.quick else DEFAULT_OUT), runs, env)
    print(markdown(runs, env))
    print(f"written: {json_path}, {md_path}", file=sys.stderr)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
