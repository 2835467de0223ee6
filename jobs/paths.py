"""Where the landing zone, Delta tables, stream checkpoints and snapshots live.

The data dir is a local path or a URL (``s3a://bucket/recsys``, ``hdfs://…``,
``file://…``): every location here is a ``schemas.storage.Location``, whose ``str()``
Spark takes as it is and whose methods do the driver's own reads and writes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from schemas.settings import data_dir_setting
from schemas.storage import Location


@dataclass(frozen=True)
class DataPaths:
    root: Location

    def __init__(self, root: "str | os.PathLike | Location"):
        object.__setattr__(self, "root", Location.of(root))

    @classmethod
    def from_settings(cls, settings: Mapping, override: "str | os.PathLike | None" = None) -> "DataPaths":
        return cls(override or data_dir_setting(settings))

    @property
    def landing(self) -> Location:
        return self.root / "landing"

    @property
    def lake(self) -> Location:
        return self.root / "lake"

    @property
    def checkpoints(self) -> Location:
        return self.root / "checkpoints"

    @property
    def snapshots(self) -> Location:
        return self.root / "snapshots"

    @property
    def policy(self) -> Location:
        """The evaluation's verdict, ``evaluation/policy.json`` (a snapshot carries a copy)."""
        return self.root / "evaluation" / "policy.json"

    def landing_for(self, table: str) -> Location:
        return self.landing / table

    def table(self, name: str) -> str:
        """Location of a Delta table, as the string Spark wants."""
        return str(self.lake / name)
