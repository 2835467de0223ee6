"""The tables: what lands, what is stored in Delta, and the candidate-list contract
that every algorithm job writes and the snapshot builder reads."""
from __future__ import annotations

from dataclasses import replace

from .fields import INT64_MAX, UINT32_MAX, Field, Table

EVENT_TYPES = ("view", "click", "add_to_cart", "remove_from_cart", "wishlist", "purchase")

# Product ids are packed as uint32 in the snapshot (4 bytes instead of 8 keeps a
# 100-item list under 1 KB), so the contract bounds them here, at the door.
USER_ID = Field("user_id", "int64", min=0, max=INT64_MAX, doc="non-negative 64-bit id")
PRODUCT_ID = Field("product_id", "int64", min=0, max=UINT32_MAX, doc="0 .. 2^32-1")

EVENTS = Table(
    name="events",
    fields=(
        USER_ID,
        Field("event_type", "string", allowed=EVENT_TYPES),
        PRODUCT_ID,
        Field("timestamp", "timestamp", min_timestamp="2000-01-01T00:00:00+00:00",
              max_future_seconds=86_400,
              doc="ISO-8601 or epoch seconds; at most one day after the run's as-of time"),
    ),
    key=("user_id", "event_type", "product_id", "timestamp"),
    doc="One user action on one product.",
)

PRODUCTS = Table(
    name="products",
    fields=(
        PRODUCT_ID,
        Field("category", "string", non_empty=True, required_unless=("active", "false"),
              doc="dot-separated path, e.g. electronics.phone; a deactivation ({product_id, "
                  "active: false}) may leave it out"),
        Field("price", "float64", required=False, min=0, max=1e9),
        Field("active", "bool", required=False, doc="false marks the product inactive; missing means true"),
        Field("other_features", "map<string,string>", required=False),
        Field("changed_at", "timestamp", required=False, min_timestamp="2000-01-01T00:00:00+00:00",
              max_future_seconds=86_400,
              doc="when the change was made (the collector stamps it): the latest change wins, "
                  "whatever order files arrive in; rows without one apply in file order"),
    ),
    key=("product_id",),
    doc="The catalog; a row upserts one product.",
)

PROFILES = Table(
    name="profiles",
    fields=(
        USER_ID,
        Field("purchase_history", "array<int64>", required=False, min=0, max=UINT32_MAX),
        Field("view_history", "array<int64>", required=False, min=0, max=UINT32_MAX),
        Field("other_features", "map<string,string>", required=False),
    ),
    key=("user_id",),
    doc="A user's profile; a row replaces the stored one.",
)

LANDING_TABLES = {t.name: t for t in (EVENTS, PRODUCTS, PROFILES)}


def _stored(table: Table, *extra: Field, partition_by: tuple[str, ...] = ()) -> Table:
    return replace(table, fields=table.fields + extra, partition_by=partition_by)


UPDATED_AT = Field("updated_at", "timestamp", doc="as-of time of the ingest run that wrote the row")

EVENTS_STORED = _stored(
    EVENTS,
    Field("event_date", "string", doc="yyyy-MM-dd (UTC)"),
    Field("ingest_batch", "string", doc="<stream>:<batch> that wrote the row; a replayed batch "
                                        "recognises its own rows by it"),
    partition_by=("event_date",),
)
PRODUCTS_STORED = _stored(
    replace(PRODUCTS, fields=tuple(
        replace(f, required=True) if f.name == "active"
        else replace(f, required_unless=None) if f.name == "category"  # a stored product has one
        else f for f in PRODUCTS.fields)),
    UPDATED_AT,
)
PROFILES_STORED = _stored(PROFILES, UPDATED_AT)

PROFILE_INTERACTIONS = Table(
    name="profile_interactions",
    fields=(USER_ID, PRODUCT_ID, Field("event_type", "string", allowed=EVENT_TYPES),
            Field("timestamp", "timestamp")),
    doc="Profile histories as interaction rows (purchase_history -> purchase, view_history -> view), "
        "stamped with the profile's updated_at. Rebuilt from profiles on every profile ingest.",
)

REJECTED = Table(
    name="rejected",
    fields=(
        Field("raw", "string", doc="the row as received (a JSON line, or the CSV/Parquet fields as JSON)"),
        Field("reason", "string"),
        Field("source_file", "string", required=False),
        Field("rejected_at", "timestamp", doc="as-of time of the ingest run"),
    ),
    doc="Quarantine: every row an ingest run refused, with why. Stored as <table>_rejected.",
)

INGEST_LOG = Table(
    name="ingest_log",
    fields=(
        Field("stream_id", "string", doc="ingest-<table>-<format>"),
        Field("batch_id", "int64"),
        Field("as_of", "timestamp"),
        Field("received", "int64"),
        Field("accepted", "int64"),
        Field("rejected", "int64"),
    ),
    key=("stream_id", "batch_id"),
    doc="One row per ingest micro-batch, written last: received = accepted + rejected.",
)

EVALUATIONS = Table(
    name="evaluations",
    fields=(
        Field("run_id", "string", doc="<split>-<as_of> for an evaluation, tuning-<split>-<as_of> for a "
                                      "tuning run: re-running the same one replaces its rows"),
        Field("as_of", "timestamp"),
        Field("evaluated_at", "timestamp"),
        Field("split", "string", allowed=("temporal", "leave_last_out", "random")),
        Field("algorithm", "string"),
        Field("segment", "string", allowed=("new", "light", "heavy", "all")),
        Field("metric", "string", doc="ndcg@10, recall@5, map@20, hit_rate@10, precision@10, mrr, "
                                      "coverage@20, novelty@20, fallback_share"),
        Field("value", "float64"),
        Field("users", "int64", doc="users the value averages over"),
        Field("trial", "int64", required=False, doc="tuning runs: the trial number (0 = the configuration "
                                                    "in conf/); null for an evaluation"),
        Field("params", "string", required=False, doc="tuning runs: the trial's parameters, JSON"),
    ),
    doc="Offline evaluation results, one row per run, algorithm, segment and metric; tuning runs add "
        "one row per trial and metric, scored on a validation split carved from the training part.",
)

ITEM_FACTORS = Table(
    name="item_factors",
    fields=(
        PRODUCT_ID,
        Field("factors", "array<float32>", doc="ALS item factors, length = rank"),
        Field("model_version", "string", doc="the ALS run that produced them"),
    ),
    key=("product_id",),
    doc="Latent factors of every product the last ALS run saw.",
)


SUBJECT_KINDS = ("user", "product", "category", "segment", "global")

CANDIDATES = Table(
    name="candidates",
    fields=(
        Field("subject_kind", "string", allowed=SUBJECT_KINDS),
        Field("subject_id", "string", doc="user or product id in decimal, a category, a profile segment "
                                          "key (see USER_SEGMENTS), or 'all' for global"),
        Field("algorithm", "string", doc="popular, als, content, hybrid, ..."),
        Field("product_ids", "array<int64>", doc="ranked best first, unique"),
        Field("scores", "array<float32>", doc="same length as product_ids, non-increasing"),
        Field("model_version", "string", doc="identifies the run that produced the list"),
    ),
    key=("subject_kind", "subject_id", "algorithm"),
    partition_by=("algorithm", "subject_kind"),
    doc="The contract between algorithm jobs and the snapshot builder: one ranked list "
        "per (subject, algorithm). A job replaces its own algorithm's partitions.",
)

GLOBAL_SUBJECT = "all"

ACTIVITY_SEGMENTS = ("new", "light", "heavy")

USER_SEGMENTS = Table(
    name="user_segments",
    fields=(
        USER_ID,
        Field("activity", "string", allowed=ACTIVITY_SEGMENTS,
              doc="by interactions up to the run's as-of: none, at most light_max_interactions, more "
                  "(the offline evaluation's segments, so the server's bandit reads their priors)"),
        Field("profile_segment", "string", required=False,
              doc="key of the user's profile segment, 'country=DE|age_band=25-34' over the configured "
                  "profile features ('?' for a missing value); null without a profile"),
    ),
    key=("user_id",),
    doc="Every user with a profile or an interaction: what the server needs to answer a user without "
        "a personal list, and to pick the bandit's segment. Replaced by each popularity run.",
)
