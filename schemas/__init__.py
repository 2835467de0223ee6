"""The contract between ``jobs`` (writers) and ``lookup_server`` (readers):
table definitions, validation rules and the snapshot record layout.

Imports neither side, nor pyspark or pyarrow at module level.
"""
from .fields import Field, Table, arrow_schema, parse_timestamp, spark_schema, validate_record
from .tables import (
    CANDIDATES, EVENT_TYPES, EVENTS, EVENTS_STORED, GLOBAL_SUBJECT, LANDING_TABLES,
    PRODUCTS, PRODUCTS_STORED, PROFILE_INTERACTIONS, PROFILES, PROFILES_STORED, REJECTED,
    SUBJECT_KINDS,
)

__all__ = [
    "Field", "Table", "arrow_schema", "parse_timestamp", "spark_schema", "validate_record",
    "CANDIDATES", "EVENT_TYPES", "EVENTS", "EVENTS_STORED", "GLOBAL_SUBJECT", "LANDING_TABLES",
    "PRODUCTS", "PRODUCTS_STORED", "PROFILE_INTERACTIONS", "PROFILES", "PROFILES_STORED",
    "REJECTED", "SUBJECT_KINDS",
]
