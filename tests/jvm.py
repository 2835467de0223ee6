"""Settings for the JVMs that tests start as processes of their own (spark-submit,
``python -m jobs.<job>``), not for the shared test session."""

# Such a JVM lives a minute on tiny data: the quick (C1) compiler alone and the serial
# GC spend less CPU on compiling and collecting than the defaults. Measured on an
# ingest of 4,000 generated events: 87 s -> 76 s; the Airflow nightly test's eight
# spark-submits: 631 s -> 556 s. The shared session lives for the whole run and is
# faster with the optimising compiler (tests/test_ingest.py took 160 s with the
# defaults, 194 s with these), so it keeps the defaults. The bigger thread stacks are
# for ALS: its iterations build a deep lineage, C1's frames are bigger, and with the
# default 1 MB the nightly DAG's ALS task died of StackOverflowError.
SHORT_LIVED_JVM = {"JAVA_TOOL_OPTIONS": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xss16m"}
