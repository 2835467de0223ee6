"""The session helper wires Delta Lake from local jars."""
from pathlib import Path

import pytest

from jobs.spark_session import MissingJarsError, delta_jars


def test_delta_jars_missing_names_the_fix(tmp_path: Path):
    """An empty jars folder fails with the make target that fills it."""
    with pytest.raises(MissingJarsError, match="make jars"):
        delta_jars(tmp_path)


@pytest.mark.spark
def test_session_reads_and_writes_delta(spark, tmp_path: Path):
    """A Delta table round-trips through the shared session."""
    path = str(tmp_path / "t")
    spark.range(5).write.format("delta").save(path)
    assert spark.read.format("delta").load(path).count() == 5
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
