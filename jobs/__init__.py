"""Batch jobs: PySpark transforms with thin I/O edges. Each job runs as
``python -m jobs.<name>`` or ``spark-submit jobs/<name>.py``."""
