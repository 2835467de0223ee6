"""The builder as it was at an earlier commit, loaded from git, to time it side by
side with the current one in the same session (``--compare-with REV``).

``jobs/build_snapshot.py``, ``jobs/snapshot_writer.py`` and, where REV has it,
``jobs/snapshot_packing.py`` are read with ``git show REV:path`` and executed as fresh
modules (the builder and writer not registered in ``sys.modules``, so cloudpickle
ships their functions to the Python workers by value); the old builder is wired to
the old writer and packer, so an older record layout is written as it was.
Everything else (schemas, Delta helpers, the packer's record-by-record fallback) is
today's.
"""
from __future__ import annotations

import subprocess
import sys
import types

from schemas.settings import PROJECT_ROOT


def module_at(rev: str, path: str, name: str, register: bool = False, **replace) -> types.ModuleType:
    """``path`` as it was at git revision ``rev``, executed as a fresh module named
    ``name``; ``register`` puts it in ``sys.modules`` (dataclasses need that; then
    cloudpickle ships its functions by reference, so only for code without UDFs)."""
    source = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=PROJECT_ROOT, capture_output=True,
                            text=True, check=True).stdout
    module = types.ModuleType(name)
    module.__file__ = f"{rev}:{path}"
    if register:
        sys.modules[name] = module
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    module.__dict__.update(replace)
    return module


def builder_at(rev: str) -> types.ModuleType:
    """The ``jobs.build_snapshot`` module of ``rev``, using that revision's SnapshotWriter."""
    commit = subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, check=True).stdout.strip()
    writer = module_at(commit, "jobs/snapshot_writer.py", f"baseline_snapshot_writer_{commit[:10]}")
    packing = {}
    if _exists(commit, "jobs/snapshot_packing.py"):  # registered: its Records is a dataclass; no UDFs in it
        packer = module_at(commit, "jobs/snapshot_packing.py", f"baseline_snapshot_packing_{commit[:10]}",
                           register=True)
        packing = {name: getattr(packer, name) for name in
                   ("Records", "numeric_subject_keys", "product_records", "ranked_list_records", "user_records")
                   if hasattr(packer, name)}
    builder = module_at(commit, "jobs/build_snapshot.py", f"baseline_build_snapshot_{commit[:10]}",
                        SnapshotWriter=writer.SnapshotWriter, **packing)
    builder.COMMIT = commit
    return builder


def _exists(commit: str, path: str) -> bool:
    return subprocess.run(["git", "cat-file", "-e", f"{commit}:{path}"], cwd=PROJECT_ROOT,
                          capture_output=True).returncode == 0
