"""Run one job from the shipped zip: the main file spark-submit needs on a cluster.

    make dist-jobs    # dist/recsys_jobs.zip (jobs/, schemas/, conf/*.toml) and dist/run_job.py
    scripts/submit --master spark://host:7077 --py-files dist/recsys_jobs.zip \\
      dist/run_job.py jobs.popularity --data-dir /mnt/lake/recsys --as-of 2026-10-31T00:00:00Z

The module (``jobs.<name>``) is imported from the zip that ``--py-files`` puts on the
driver's and executors' paths; the arguments after it go to its ``main()``. Giving
spark-submit ``jobs/popularity.py`` instead would run that file from wherever it lies
(a checkout) and put its folder on the path. This file imports nothing of the project
itself, so it can live in ``dist/`` beside the zip.
"""
import importlib
import logging
import sys

log = logging.getLogger("run_job")


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help") or not argv[0].startswith("jobs."):
        print(__doc__.strip(), file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    name, job_args = argv[0], argv[1:]
    # Imported, not run as __main__: its functions then pickle by reference to
    # jobs.<name>, which the executors import from the zip too.
    module = importlib.import_module(name)
    log.info("%s from %s", name, module.__file__)
    sys.argv = [name, *job_args]  # the job's --help names the job, not this file
    return module.main(job_args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
