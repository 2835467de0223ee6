"""UCI Online Retail (data set 352) into landing events and a catalog.

Input: CSV with header
``InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country``,
RFC 4180 quoting (doubled quotes inside quoted descriptions), one line per product
on an invoice. ``InvoiceDate`` is ``yyyy-MM-dd HH:mm:ss`` in UK local time without a
zone; it is read as Europe/London and landed as UTC ISO-8601 (``...Z``), so summer
(BST) invoices move back an hour.

Events: a line of a sale becomes one ``purchase`` with user_id = CustomerID
(written ``17850.0`` in the file) and product_id from the StockCode (below).
Left out, because they are not purchases of a product by a known customer:

- cancellations: InvoiceNo starting with ``C`` (they repeat the product and price
  with a negative quantity and do not say which invoice they cancel), and any line
  with Quantity <= 0 (stock adjustments: no customer, price 0);
- lines without a CustomerID: anonymous sales, a quarter of the file, with nobody
  to recommend to;
- non-product StockCodes (``NON_PRODUCT_CODES``, upper-cased, and gift vouchers
  ``gift_0001_NN``): postage, carriage, manual entries, discounts, fees, bad debt.

Lines that repeat another's (customer, product, invoice time) land once: the event
carries no quantity, so a product listed twice on one invoice is one purchase, and
ingest would quarantine the copy as a duplicate event anyway. A line whose fields
cannot be read is not dropped: a Quantity that is not an integer gives a null event
type, a CustomerID that is not a whole number a null user, an unreadable date a
null timestamp, an empty StockCode a null product -- ingest quarantines the row
with the reason.

Product ids. StockCode is alphanumeric; product_id is a uint32. Codes are
upper-cased first: ``85123a`` and ``85123A`` are the same product (all 111
lower-case codes in the file have an upper-case twin with the same description).
Five digits and up to two letters map readably and without collisions:
``digits * 10_000 + 100 * first_letter + second_letter`` (A = 1 .. Z = 26, 0 for
none), so ``71053`` -> 710_530_000, ``85123A`` -> 851_230_100 and ``15056BL`` ->
150_560_212, all below 10^9. Any other code (``DCGS0003``, ``DCGSSGIRL``, ``PADS``)
takes ``10^9 + CRC-32(code) mod (2^32 - 10^9)``: at or above 10^9, so it never meets
a readable id; on this file its 17 such codes get distinct ids (tested).

Catalog: one row per product code in the file, sold or not. The data has no
category, and a word of the description would pass for one it is not, so every
product gets the one category ``CATEGORY``; the description carries the content.
price = the product's most common UnitPrice above 0 (ties: the lower);
other_features ``description`` (the most common non-blank Description of those
priced lines, trimmed; price-0 lines hold stock notes such as ``damaged``) -- a text
feature, so jobs.content makes TF-IDF words of it -- and ``sku``, the upper-cased
StockCode, which jobs.content leaves out of its documents (unique per product).

Country per customer would be a profile feature; this loader, like the others,
lands events and products only.

    python -m jobs.loaders.online_retail --input OnlineRetail.csv --out var/landing
    spark-submit jobs/loaders/online_retail.py --input OnlineRetail.csv --out var/landing
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: spark-submit jobs/loaders/online_retail.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from jobs.loaders import (  # noqa: E402
    conform, epoch_seconds_to_iso, run_events_and_catalog_loader,
)
from schemas import EVENTS, PRODUCTS  # noqa: E402

SOURCE = "online_retail"
RAW_COLUMNS = ("InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice",
               "CustomerID", "Country")
RAW_SCHEMA = ", ".join(f"{c} STRING" for c in RAW_COLUMNS)
TIME_ZONE = "Europe/London"
CATEGORY = "retail"
# Upper-cased StockCodes that are charges or bookkeeping, not products (data README).
NON_PRODUCT_CODES = ("POST", "DOT", "M", "C2", "D", "S", "BANK CHARGES", "AMAZONFEE", "CRUK", "B")
GIFT_VOUCHER = r"^GIFT_0001_[0-9]+$"
# 5 digits then 0-2 letters: the readable ids, below HASHED_BASE.
READABLE_CODE = r"^([0-9]{5})([A-Z]?)([A-Z]?)$"
HASHED_BASE = 1_000_000_000
HASHED_SPAN = 2 ** 32 - HASHED_BASE
_INVOICE_DATE = r"^([0-9]{4})-([0-9]{2})-([0-9]{2}) ([0-9]{2}):([0-9]{2}):([0-9]{2})$"
_CUSTOMER_ID = r"^([0-9]+)(\.0*)?$"


def read_raw(spark, path: str | Path):
    """The raw CSV, every column a string so that no malformed row is dropped on read."""
    return spark.read.csv(str(path), schema=RAW_SCHEMA, header=True, quote='"', escape='"',
                          mode="PERMISSIVE")


def stock_code(col):
    """The StockCode as products are keyed: trimmed, upper-cased; null when blank."""
    from pyspark.sql import functions as F

    return F.nullif(F.upper(F.trim(col)), F.lit(""))


def is_product_code(code):
    """False for the charges and vouchers in ``NON_PRODUCT_CODES`` / ``GIFT_VOUCHER``
    (``code`` as ``stock_code`` gives it); null for a null code."""
    return ~(code.isin(*NON_PRODUCT_CODES) | code.rlike(GIFT_VOUCHER))


def product_id_of(code):
    """uint32 product id of a ``stock_code`` (see the module docstring); null for null."""
    from pyspark.sql import functions as F

    def letter(group: int):
        text = F.regexp_extract(code, READABLE_CODE, group)
        return F.when(text == "", 0).otherwise(F.ascii(text) - 64)

    readable = (F.regexp_extract(code, READABLE_CODE, 1).cast("long") * 10_000
                + letter(2) * 100 + letter(3))
    hashed = F.lit(HASHED_BASE) + F.pmod(F.crc32(code), F.lit(HASHED_SPAN))
    return F.when(code.rlike(READABLE_CODE), readable).otherwise(hashed)


def utc_iso_of_uk_time(col):
    """UK local ``yyyy-MM-dd HH:mm:ss`` as UTC ``yyyy-MM-ddTHH:mm:ssZ``; null when it does not parse.

    Built from the parts in Europe/London, so the session time zone plays no part.
    """
    from pyspark.sql import functions as F

    text = F.trim(col)

    def part(group: int):
        return F.regexp_extract(text, _INVOICE_DATE, group).try_cast("int")

    moment = F.try_make_timestamp_ltz(part(1), part(2), part(3), part(4), part(5), part(6), F.lit(TIME_ZONE))
    return epoch_seconds_to_iso(F.unix_timestamp(moment))


def customer_id(col):
    """``17850.0`` -> 17850; null for anything not a whole number."""
    from pyspark.sql import functions as F

    text = F.trim(col)
    return F.when(text.rlike(_CUSTOMER_ID), F.regexp_extract(text, _CUSTOMER_ID, 1).try_cast("long"))


def to_events(df):
    """Raw lines -> landing purchase events: sales of products to known customers, once each."""
    from pyspark.sql import functions as F

    code = stock_code(F.col("StockCode"))
    quantity = F.trim(F.col("Quantity")).try_cast("long")
    customer = F.nullif(F.trim(F.col("CustomerID")), F.lit(""))
    cancelled = F.upper(F.trim(F.col("InvoiceNo"))).startswith("C") | (quantity <= 0)
    # Null counts as kept: an unreadable field lands, for ingest to quarantine.
    kept = (customer.isNotNull() & ~F.coalesce(cancelled, F.lit(False))
            & F.coalesce(is_product_code(code), F.lit(True)))
    return conform(df.where(kept).select(
        customer_id(customer).alias("user_id"),
        F.when(quantity.isNotNull(), F.lit("purchase")).alias("event_type"),
        product_id_of(code).alias("product_id"),
        utc_iso_of_uk_time(F.col("InvoiceDate")).alias("timestamp"),
    ), EVENTS).dropDuplicates()


def _most_common(df, key: str, value: str, tie_break):
    """``(key, value)``: each key's most frequent value, ties broken by ``tie_break``."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    counts = df.groupBy(key, value).count()
    first = Window.partitionBy(key).orderBy(F.col("count").desc(), tie_break)
    return (counts.withColumn("_rank", F.row_number().over(first))
            .where(F.col("_rank") == 1).select(key, value))


def to_products(df):
    """Raw lines -> one catalog row per product code (see the module docstring)."""
    from pyspark.sql import functions as F

    lines = (df.withColumn("sku", stock_code(F.col("StockCode")))
             .where(F.coalesce(is_product_code(F.col("sku")), F.lit(True)))
             .withColumn("product_id", product_id_of(F.col("sku"))))
    priced = (lines.withColumn("price", F.trim(F.col("UnitPrice")).try_cast("double"))
              .where(F.col("price") > 0)
              .withColumn("description", F.nullif(F.trim(F.col("Description")), F.lit(""))))
    price = _most_common(priced, "product_id", "price", F.col("price").asc())
    description = _most_common(priced.where(F.col("description").isNotNull()), "product_id", "description",
                               F.col("description").asc())
    features = F.create_map(F.lit("description"), F.col("description"), F.lit("sku"), F.col("sku"))
    rows = (lines.groupBy("product_id").agg(F.max("sku").alias("sku"))
            .join(price, "product_id", "left").join(description, "product_id", "left"))
    return conform(rows.select(
        "product_id",
        F.lit(CATEGORY).alias("category"),
        "price",
        F.map_filter(features, lambda _k, v: v.isNotNull()).alias("other_features"),
    ), PRODUCTS)


def main(argv: list[str] | None = None) -> int:
    return run_events_and_catalog_loader(
        argv, SOURCE, "Load the UCI Online Retail CSV into the landing zone (events and products).",
        read_raw, to_products, to_events)


if __name__ == "__main__":
    sys.exit(main())
