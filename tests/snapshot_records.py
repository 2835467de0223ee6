"""A snapshot's whole contents, for tests that compare snapshots record by record."""
from __future__ import annotations

from pathlib import Path

import lmdb


def snapshot_records(path: Path) -> dict[str, dict[bytes, bytes]]:
    """Every record of every named database in the snapshot at ``path``: name -> {key: value}."""
    env = lmdb.open(str(path), readonly=True, lock=False, max_dbs=256, subdir=True)
    try:
        with env.begin() as txn:
            names = [bytes(k) for k, _ in txn.cursor()]
            return {name.decode(): dict(txn.cursor(db=env.open_db(name, txn=txn, create=False)).iternext())
                    for name in names}
    finally:
        env.close()
