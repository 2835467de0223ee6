"""The tuned configuration: what the last tuning run chose, laid over conf.

``jobs.tuning`` writes ``<data-dir>/evaluation/tuned.json``; the ALS, EASE, ranked,
hybrid and evaluation jobs (and the pipeline) read their settings through ``with_tuned`` so the
next nightly run uses the winners. ``[tuning] use_tuned = false`` (or
``RECSYS__JOBS__TUNING__USE_TUNED=false``) turns that off; a missing or unreadable
file leaves conf as it is, with a log line saying so.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from schemas.storage import Location

log = logging.getLogger(__name__)

TUNED_FILE = Path("evaluation") / "tuned.json"
# Sections tuning may change; anything else in the file is ignored.
TUNED_SECTIONS = ("als", "ease", "ranked", "hybrid")


def write_json_atomically(path: "str | os.PathLike | Location", document: dict) -> None:
    """Write ``document`` to ``path`` (a local path or a URL) so that readers see the old or the new file, whole."""
    Location.of(path).write_text(json.dumps(document, indent=2, sort_keys=True))


def read_tuned(root: "str | os.PathLike | Location") -> dict | None:
    """The last tuning run's document under ``root``, or None if there is none or it is unreadable."""
    path = Location.of(root) / TUNED_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring %s: %s", path, exc)
        return None


def with_tuned(settings: dict, root: "str | os.PathLike | Location") -> dict:
    """``settings`` (conf/jobs.toml) with the tuned keys of TUNED_SECTIONS laid over it."""
    if not settings.get("tuning", {}).get("use_tuned", True):
        return settings
    document = read_tuned(root)
    if not document:
        return settings
    merged = dict(settings)
    for section in TUNED_SECTIONS:
        chosen = document.get("settings", {}).get(section)
        if isinstance(chosen, dict) and chosen:
            merged[section] = {**settings.get(section, {}), **chosen}
    log.info("using tuned settings from %s (%s): %s", TUNED_FILE, document.get("run_id"),
             {s: document.get("settings", {}).get(s) for s in TUNED_SECTIONS})
    return merged
