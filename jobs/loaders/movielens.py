"""MovieLens ratings (and optionally the movie list) into landing events and a catalog.

Ratings come in two layouts, told apart by file name (``--flavor`` overrides):

* ``100k``: ``u.data`` (and ``u1.base`` etc.), tab-separated ``user item rating timestamp``;
  catalog ``u.item``, ``|``-separated ``id|title|release date|video release date|IMDb URL|``
  then 19 genre flags, Latin-1.
* ``1m``: ``ratings.dat``, ``user::item::rating::timestamp``; catalog ``movies.dat``,
  ``id::title::Genre1|Genre2``, Latin-1.

Implicit-feedback mapping: MovieLens holds explicit 1-5 star ratings, while our
pipeline learns from implicit events. A rating of 4 or 5 ("liked it") becomes a
``purchase``, the strongest positive signal; any lower rating becomes a ``view``
(the user watched it, without endorsing it). A rating that is not a number gives
a null event type, which ingest quarantines. Timestamps are Unix seconds.

Catalog: category = the first genre, lower-cased (``unknown`` when none);
other_features ``title`` and ``genres`` (joined with ``|``); no price.

    python -m jobs.loaders.movielens --input ml-100k/u.data --items ml-100k/u.item --out var/landing
    spark-submit jobs/loaders/movielens.py --input ml-1m --out var/landing
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: spark-submit jobs/loaders/movielens.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from jobs.loaders import (  # noqa: E402
    base_parser, configure_logging, conform, epoch_seconds_to_iso, loader_session, new_run_id,
    write_landing,
)
from schemas import EVENTS, PRODUCTS  # noqa: E402

log = logging.getLogger(__name__)

SOURCE = "movielens"
FLAVORS = ("100k", "1m")
RATINGS_FILE = {"100k": "u.data", "1m": "ratings.dat"}
ITEMS_FILE = {"100k": "u.item", "1m": "movies.dat"}
SEPARATOR = {"100k": "\t", "1m": "::"}
ITEMS_SEPARATOR = {"100k": "|", "1m": "::"}
GENRES_100K = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
               "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
               "Romance", "Sci-Fi", "Thriller", "War", "Western")
RATINGS_SCHEMA = "user_id STRING, item_id STRING, rating STRING, timestamp STRING"
ITEMS_SCHEMA = {
    "100k": ", ".join(["movie_id STRING", "title STRING", "release_date STRING",
                       "video_release_date STRING", "imdb_url STRING"]
                      + [f"g{i} STRING" for i in range(len(GENRES_100K))]),
    "1m": "movie_id STRING, title STRING, genres STRING",
}
LIKED_RATING = 4.0


def flavor_of(path: str | Path) -> str:
    """``1m`` for ``*.dat`` files, else ``100k`` (``u.data``, ``u1.base``, ``u.item``, ...)."""
    return "1m" if Path(path).name.endswith(".dat") else "100k"


def _read(spark, path, schema: str, sep: str, encoding: str = "UTF-8"):
    # quote "" turns quoting off: titles may hold a lone double quote.
    return spark.read.csv(str(path), schema=schema, sep=sep, header=False, quote="",
                          encoding=encoding, mode="PERMISSIVE")


def read_ratings(spark, path: str | Path, flavor: str):
    """Raw ratings: user_id, item_id, rating, timestamp, all strings."""
    return _read(spark, path, RATINGS_SCHEMA, SEPARATOR[flavor])


def read_items(spark, path: str | Path, flavor: str, encoding: str = "ISO-8859-1"):
    """Raw movie rows of ``u.item`` or ``movies.dat``, all strings."""
    return _read(spark, path, ITEMS_SCHEMA[flavor], ITEMS_SEPARATOR[flavor], encoding)


def movies_from_u_item(df):
    """``u.item`` rows -> movie_id, title, genres (array, in the file's genre order)."""
    from pyspark.sql import functions as F

    flags = [F.when(F.trim(F.col(f"g{i}")) == "1", F.lit(name)) for i, name in enumerate(GENRES_100K)]
    return df.select("movie_id", "title", F.filter(F.array(*flags), lambda g: g.isNotNull()).alias("genres"))


def movies_from_movies_dat(df):
    """``movies.dat`` rows -> movie_id, title, genres (array)."""
    from pyspark.sql import functions as F

    genres = F.filter(F.split(F.coalesce(F.col("genres"), F.lit("")), r"\|"), lambda g: g != "")
    return df.select("movie_id", "title", genres.alias("genres"))


def to_events(df):
    """Raw ratings -> landing events: rating >= 4 is a purchase, any other rating a view."""
    from pyspark.sql import functions as F

    rating = F.trim(F.col("rating")).try_cast("double")
    return conform(df.select(
        F.trim(F.col("user_id")).try_cast("long").alias("user_id"),
        F.when(rating >= LIKED_RATING, "purchase").when(rating.isNotNull(), "view").alias("event_type"),
        F.trim(F.col("item_id")).try_cast("long").alias("product_id"),
        epoch_seconds_to_iso(F.trim(F.col("timestamp"))).alias("timestamp"),
    ), EVENTS)


def to_products(movies):
    """movie_id, title, genres -> catalog rows: category = first genre, lower-cased."""
    from pyspark.sql import functions as F

    first_genre = F.when(F.size("genres") > 0, F.lower(F.element_at("genres", 1))).otherwise("unknown")
    features = F.create_map(F.lit("title"), F.trim(F.col("title")),
                            F.lit("genres"), F.array_join("genres", "|"))
    return conform(movies.select(
        F.trim(F.col("movie_id")).try_cast("long").alias("product_id"),
        first_genre.alias("category"),
        F.map_filter(features, lambda _k, v: v.isNotNull()).alias("other_features"),
    ), PRODUCTS)


def resolve_inputs(input_path: Path, items: Path | None, flavor: str | None) -> tuple[Path, Path | None, str]:
    """Ratings file, catalog file (or None) and flavor from the command line.

    ``input_path`` may be the data set folder; without ``--items``, the flavor's
    catalog file next to the ratings is used when it exists.
    """
    ratings = input_path
    if input_path.is_dir():
        found = [input_path / RATINGS_FILE[f] for f in ((flavor,) if flavor else FLAVORS)
                 if (input_path / RATINGS_FILE[f]).is_file()]
        if not found:
            raise FileNotFoundError(f"no u.data or ratings.dat in {input_path}")
        ratings = found[0]
    flavor = flavor or flavor_of(ratings)
    if items is None:
        sibling = ratings.parent / ITEMS_FILE[flavor]
        items = sibling if sibling.is_file() else None
    return ratings, items, flavor


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("python -m jobs.loaders.movielens",
                         "Load MovieLens ratings (u.data or ratings.dat) and optionally the movie list "
                         "(u.item or movies.dat) into the landing zone. Rating >= 4 -> purchase, else view.")
    parser.add_argument("--items", type=Path, default=None,
                        help="u.item or movies.dat (default: the one next to the ratings, if any)")
    parser.add_argument("--flavor", choices=FLAVORS, default=None,
                        help="file layout; default: from the file name (*.dat -> 1m, else 100k)")
    parser.add_argument("--items-encoding", default="ISO-8859-1", help="character set of the movie list")
    args = parser.parse_args(argv)
    configure_logging()
    ratings_path, items_path, flavor = resolve_inputs(args.input, args.items, args.flavor)
    log.info("MovieLens %s: ratings %s, movies %s", flavor, ratings_path, items_path or "(none)")
    run_id = new_run_id()
    with loader_session("load-movielens") as spark:
        products = []
        if items_path is not None:
            items_flavor = args.flavor or flavor_of(items_path)
            raw_items = read_items(spark, items_path, items_flavor, args.items_encoding)
            movies = movies_from_u_item(raw_items) if items_flavor == "100k" else movies_from_movies_dat(raw_items)
            products = write_landing(to_products(movies), args.out, "products", SOURCE, args.fmt, run_id)
        events = write_landing(to_events(read_ratings(spark, ratings_path, flavor)), args.out, "events",
                               SOURCE, args.fmt, run_id)
    print(f"movielens run {run_id}: {len(products)} products file(s), {len(events)} events file(s) "
          f"under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
