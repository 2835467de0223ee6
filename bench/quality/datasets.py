"""The real data sets, as the two frames the evaluation reads.

- interactions: ``(user_id long, product_id long, event_type string, timestamp timestamp)``
- products: ``(product_id long, category string, price double, active bool,
  other_features map<string,string>)``

Both go through the project's own loaders (``jobs.loaders``), so the benchmark reads
the data exactly as the pipeline would land it; only the last step differs: instead
of ingest, ``jobs.loaders.evaluation_frames`` types the landing rows directly.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from schemas.settings import PROJECT_ROOT

from jobs.loaders import evaluation_frames, movielens, online_retail, taobao

log = logging.getLogger("bench.quality")

TAOBAO_FILE = Path("taobao-userbehavior-sample") / "UserBehavior.csv"
# The sample covers 2017-11-25..2017-12-03 China time; its last event is at
# 2017-12-03T15:59Z. Midnight after it is the clock of both Taobao protocols.
TAOBAO_AS_OF = datetime(2017, 12, 4, tzinfo=timezone.utc)
ONLINE_RETAIL_FILE = Path("online-retail") / "OnlineRetail.csv"
# The last invoice is at 2011-12-09 12:50 UK time (GMT, so 12:50Z). Midnight after it
# is the clock of both Online Retail protocols.
ONLINE_RETAIL_AS_OF = datetime(2011, 12, 10, tzinfo=timezone.utc)
# Every MovieLens rating becomes one interaction of this type, whatever its stars:
# a rated movie was watched. "purchase" rather than "view" because every algorithm
# leaves a user's purchases out of their list, so rated movies are never
# recommended back -- the rule of the published MovieLens protocols.
MOVIELENS_EVENT = "purchase"
MOVIELENS_CATEGORY = "movie"  # when no u.item / movies.dat sits beside the ratings


def iso(moment: datetime) -> str:
    """``2017-12-04T00:00:00Z``: how the report writes a UTC time."""
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass
class Dataset:
    name: str
    source: str               # the file read
    interactions: DataFrame   # materialised
    products: DataFrame       # materialised
    as_of: datetime           # the clock: rows after it are never read

    def describe(self) -> dict:
        counts = self.interactions.agg(F.count("*").alias("interactions"),
                                       F.countDistinct("user_id").alias("users"),
                                       F.countDistinct("product_id").alias("products")).first()
        return {"name": self.name, "source": self.source, "as_of": iso(self.as_of),
                **counts.asDict(), "catalog": self.products.count()}


def default_data_root() -> Path:
    """``$RECSYS_SHARED_DATA``, else ``../shared/data`` beside the repository."""
    return Path(os.environ.get("RECSYS_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))


def load_taobao(spark: SparkSession, data_root: Path) -> Dataset:
    """The Taobao UserBehavior sample: events and a catalog keyed by category id."""
    path = data_root / TAOBAO_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: pass --data-root or set RECSYS_SHARED_DATA")
    raw = taobao.read_raw(spark, path)
    interactions, products = evaluation_frames(taobao.to_events(raw), taobao.to_products(raw))
    return Dataset("taobao", str(path), interactions.localCheckpoint(), products.localCheckpoint(), TAOBAO_AS_OF)


def load_online_retail(spark: SparkSession, data_root: Path) -> Dataset:
    """UCI Online Retail: purchases of products by known customers, and a catalog with
    one category and the description as content (``jobs.loaders.online_retail``)."""
    path = data_root / ONLINE_RETAIL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: pass --data-root or set RECSYS_SHARED_DATA")
    raw = online_retail.read_raw(spark, path)
    interactions, products = evaluation_frames(online_retail.to_events(raw), online_retail.to_products(raw))
    return Dataset("online-retail", str(path), interactions.localCheckpoint(), products.localCheckpoint(),
                   ONLINE_RETAIL_AS_OF)


def load_movielens(spark: SparkSession, path: Path) -> Dataset:
    """MovieLens ratings (``u.data`` or ``ratings.dat``, or their folder) as implicit
    interactions, every rating one ``MOVIELENS_EVENT``. The catalog comes from the
    movie list beside the ratings when there is one (category = first genre), else
    every rated movie gets the one category ``MOVIELENS_CATEGORY``. The clock is
    one second after the last rating."""
    ratings_path, items_path, flavor = movielens.resolve_inputs(path, None, None)
    raw = movielens.read_ratings(spark, ratings_path, flavor)
    landing = movielens.to_events(raw).withColumn("event_type", F.lit(MOVIELENS_EVENT))
    if items_path is not None:
        raw_movies = movielens.read_items(spark, items_path, flavor)
        movies = (movielens.movies_from_u_item(raw_movies) if flavor == "100k"
                  else movielens.movies_from_movies_dat(raw_movies))
        catalog = movielens.to_products(movies)
    else:
        catalog = landing.select("product_id").distinct().select(
            "product_id", F.lit(MOVIELENS_CATEGORY).alias("category"), F.lit(None).alias("price"),
            F.lit(None).cast("boolean").alias("active"),
            F.lit(None).cast("map<string,string>").alias("other_features"))
    interactions, products = evaluation_frames(landing, catalog)
    interactions = interactions.localCheckpoint()
    # Epoch seconds, not a collected timestamp: those come back naive, in the driver's zone.
    last = interactions.agg(F.max(F.unix_timestamp("timestamp"))).first()[0]
    if last is None:
        raise ValueError(f"{ratings_path}: no readable ratings")
    as_of = datetime.fromtimestamp(last + 1, timezone.utc)
    log.info("MovieLens %s: ratings %s, movie list %s", flavor, ratings_path, items_path or "(none)")
    return Dataset("movielens", str(ratings_path), interactions, products.localCheckpoint(), as_of)
