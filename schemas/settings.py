"""Configuration files: ``conf/<name>.toml``, then environment overrides, then
explicit overrides (tests).

An environment variable ``RECSYS__<NAME>__<SECTION>__<KEY>=<toml value>`` overrides
one key, e.g. ``RECSYS__JOBS__POPULARITY__TOP_N=50``; ``RECSYS_CONF_DIR`` points at
another conf folder. Values are parsed as TOML (``50``, ``"text"``, ``[1, 2]``),
falling back to the raw string.

``conf/`` sits beside the packages: in the checkout, or inside ``dist/recsys_jobs.zip``
when the code is shipped with ``spark-submit --py-files`` (``make dist-jobs``).
"""
from __future__ import annotations

import copy
import os
import tomllib
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Mapping

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ENV_PREFIX = "RECSYS__"


def conf_dir() -> Traversable:
    """``$RECSYS_CONF_DIR``, else the ``conf`` folder beside this package: a real folder in
    a checkout, a folder inside the zip when imported from one (PROJECT_ROOT is then the
    zip file, so plain paths under it cannot be opened)."""
    if os.environ.get("RECSYS_CONF_DIR"):
        return Path(os.environ["RECSYS_CONF_DIR"])
    return resources.files(__package__).parent / "conf"


def _parse_env_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def deep_merge(base: dict, overrides: Mapping) -> dict:
    """A copy of ``base`` with ``overrides`` merged in, nested tables merged key by key."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_conf(name: str, overrides: Mapping | None = None, environ: Mapping[str, str] | None = None) -> dict:
    """The merged settings of ``conf/<name>.toml``."""
    with (conf_dir() / f"{name}.toml").open("rb") as fh:
        settings = tomllib.load(fh)
    environ = os.environ if environ is None else environ
    prefix = f"{ENV_PREFIX}{name.upper()}__"
    for var, text in environ.items():
        if not var.startswith(prefix):
            continue
        keys = [k.lower() for k in var[len(prefix):].split("__") if k]
        nested: dict = {}
        cursor = nested
        for key in keys[:-1]:
            cursor = cursor.setdefault(key, {})
        cursor[keys[-1]] = _parse_env_value(text)
        settings = deep_merge(settings, nested)
    return deep_merge(settings, overrides or {})


def data_dir_setting(settings: Mapping) -> str:
    """Root of landing zone, lake, checkpoints and snapshots, as configured: a path or a
    URL (``s3a://bucket/prefix``); ``RECSYS_DATA_DIR`` wins."""
    return os.environ.get("RECSYS_DATA_DIR") or str(settings.get("data_dir", "var"))


def data_dir(settings: Mapping) -> Path:
    """The data dir as a folder on this machine, as lookup hosts and collectors need it."""
    from schemas.storage import Location  # storage imports this module

    return Location.of(data_dir_setting(settings)).local_path
