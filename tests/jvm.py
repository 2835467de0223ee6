"""Settings for the JVMs that tests start as processes of their own (spark-submit,
``python -m jobs.<job>``), not for the shared test session."""

# Such a JVM lives a minute on tiny data: the quick (C1) compiler alone and the serial
# GC spend less CPU on compiling and collecting than the defaults. Measured on an
# ingest of 4,000 generated events: 87 s -> 76 s. The shared session lives for the
# whole run and is faster with the optimising compiler (tests/test_ingest.py took
# 160 s with the defaults, 194 s with these), so it keeps the defaults. Not for ALS
# either: the nightly DAG's ALS task died of StackOverflowError with these (its
# iterations build a deep lineage, and C1's frames are bigger), so the Airflow test's
# spark-submits run as shipped.
SHORT_LIVED_JVM = {"JAVA_TOOL_OPTIONS": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"}
