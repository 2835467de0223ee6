"""Copied as ``sitecustomize.py`` into a folder on the PYTHONPATH of the driver and of the
executors' Python workers by tests/test_cluster.py: every ``jobs`` and ``schemas``
module imported prints ``recsys-import <pid> <module> <origin>`` on stderr (the driver's
log; the executor's stderr file under the worker's work dir).

It only watches: the spec is the one the remaining finders return, so imports resolve
exactly as without it (zip first, then the checkout's editable install, if anything
was missing from the zip).
"""
import os
import sys

TRACED = ("jobs", "schemas")


class ImportTrace:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.partition(".")[0] not in TRACED:
            return None
        for finder in sys.meta_path:
            if finder is cls or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                print(f"recsys-import {os.getpid()} {name} {spec.origin}", file=sys.stderr, flush=True)
                return spec
        return None


sys.meta_path.insert(0, ImportTrace)
