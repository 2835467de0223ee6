"""Delta helpers: a table written before a column was added to its definition gains it."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

import pytest

from jobs.delta_tables import ensure_table
from schemas import PRODUCTS_STORED, spark_schema

pytestmark = pytest.mark.spark


def test_ensure_table_adds_the_nullable_columns_the_definition_gained(spark, tmp_path):
    path = str(tmp_path / "products")
    older = replace(PRODUCTS_STORED, fields=tuple(f for f in PRODUCTS_STORED.fields if f.name != "changed_at"))
    spark.createDataFrame([(1, "a", None, True, None, datetime(2026, 1, 1, tzinfo=timezone.utc))],
                          spark_schema(older)) \
        .write.format("delta").save(path)
    ensure_table(spark, path, PRODUCTS_STORED)
    table = spark.read.format("delta").load(path)
    assert table.columns == [f.name for f in older.fields] + ["changed_at"]
    assert table.first().changed_at is None and table.count() == 1
    ensure_table(spark, path, PRODUCTS_STORED)  # nothing left to add: no change
    assert spark.read.format("delta").load(path).columns == table.columns
