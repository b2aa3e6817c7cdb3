"""Driver-side rows as a DataFrame through Arrow (:func:`pipelines.runtime.local_rows.rows_frame`):
the same rows and schema as ``spark.createDataFrame(rows, schema)``, nulls included, and a wrong
type refused, not coerced."""
from __future__ import annotations

from datetime import date

import pyarrow as pa
import pytest
from pyspark.sql.types import StructType

from pipelines.lake import tables
from pipelines.runtime.local_rows import rows_frame


def test_rows_frame_equals_create_data_frame_nulls_and_empty_included(spark):
    schema = StructType([f for f in tables.RUN_METRICS.schema.fields if f.name != "recorded_at"])
    rows = [("r1", date(2026, 1, 5), "stage", "ok", "v1", 10, 2**40, 0, 0.5, None, 1.25, '{"a": 1}'),
            ("r2", date(2026, 1, 6), "publish", "failed", None, None, 3, None, None, 0.0, 0.0, None)]
    frame = rows_frame(spark, rows, schema)
    assert frame.schema == schema
    assert frame.collect() == spark.createDataFrame(rows, schema).collect()

    history = tables.USER_TOKEN_HISTORY.schema     # arrays of dates and smallints, no rows
    empty = rows_frame(spark, [], history)
    assert empty.schema == history and empty.count() == 0


def test_rows_frame_refuses_a_value_of_the_wrong_type(spark):
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)):
        rows_frame(spark, [("not a date",)], StructType.fromDDL("event_date date"))
