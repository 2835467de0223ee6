"""The candidates contract (schemas.tables.CANDIDATES) as assertions every
algorithm's output must pass, like lkpy's ScorerTests: call
``assert_candidates_contract(df)`` from each algorithm's tests."""
from __future__ import annotations

import math

from schemas import CANDIDATES, GLOBAL_SUBJECT, SUBJECT_KINDS, spark_schema
from schemas.fields import UINT32_MAX


def _without_nullability(data_type):
    """``data_type`` with every nullable/containsNull flag set to True."""
    from pyspark.sql import types as T

    if isinstance(data_type, T.ArrayType):
        return T.ArrayType(_without_nullability(data_type.elementType), True)
    if isinstance(data_type, T.MapType):
        return T.MapType(_without_nullability(data_type.keyType), _without_nullability(data_type.valueType), True)
    if isinstance(data_type, T.StructType):
        return T.StructType([T.StructField(f.name, _without_nullability(f.dataType), True) for f in data_type])
    return data_type


def assert_candidates_schema(schema) -> None:
    """Same column names, order and types as CANDIDATES; nullability is not compared."""
    assert _without_nullability(schema) == _without_nullability(spark_schema(CANDIDATES)), schema.simpleString()


def assert_candidate_rows(rows) -> None:
    """Each row is one well-formed ranked list, and no (subject, algorithm) repeats."""
    seen = set()
    for row in rows:
        kind, subject, algorithm = row["subject_kind"], row["subject_id"], row["algorithm"]
        where = f"{kind}/{subject}/{algorithm}"
        assert kind in SUBJECT_KINDS, where
        assert algorithm and row["model_version"], where
        if kind in ("user", "product"):
            assert subject is not None and subject.isdigit(), f"{where}: subject id is not a decimal id"
        elif kind == "global":
            assert subject == GLOBAL_SUBJECT, where
        else:
            assert subject, where
        assert (kind, subject, algorithm) not in seen, f"{where}: listed twice"
        seen.add((kind, subject, algorithm))
        ids, scores = row["product_ids"], row["scores"]
        assert len(ids) == len(scores), f"{where}: {len(ids)} ids, {len(scores)} scores"
        assert all(p is not None and 0 <= p <= UINT32_MAX for p in ids), f"{where}: bad product id"
        assert len(set(ids)) == len(ids), f"{where}: repeated product id"
        assert all(s is not None and math.isfinite(s) for s in scores), f"{where}: non-finite score"
        assert all(a >= b for a, b in zip(scores, scores[1:])), f"{where}: scores increase"


def assert_candidates_contract(df) -> list:
    """Check a candidates DataFrame's schema and every list in it; return the collected rows."""
    assert_candidates_schema(df.schema)
    rows = df.collect()
    assert_candidate_rows(rows)
    return rows
