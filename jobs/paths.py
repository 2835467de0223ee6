"""Where the landing zone, Delta tables, stream checkpoints and snapshots live."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from schemas.settings import data_dir


@dataclass(frozen=True)
class DataPaths:
    root: Path

    @classmethod
    def from_settings(cls, settings: Mapping, override: str | Path | None = None) -> "DataPaths":
        return cls(Path(override) if override else data_dir(settings))

    @property
    def landing(self) -> Path:
        return self.root / "landing"

    @property
    def lake(self) -> Path:
        return self.root / "lake"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def snapshots(self) -> Path:
        return self.root / "snapshots"

    def landing_for(self, table: str) -> Path:
        return self.landing / table

    def table(self, name: str) -> str:
        """Path of a Delta table, as the string Spark wants."""
        return str((self.lake / name).resolve())
