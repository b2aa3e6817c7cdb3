"""Small DataFrames built from rows held on the driver, without a Python worker.

``spark.createDataFrame(list_of_tuples, schema)`` pickles the rows into an RDD that a Python
worker re-serialises: the executor starts its Python daemon and forks workers just to hand a few
rows to the JVM. In a step that runs no Python UDF (the gates, publish, init, maintenance) that
is the only reason its executor starts Python at all; with :mod:`pipelines.runtime.python_daemon`
the daemon first imports torch and transformers for the encoder. Every step records a
``run_metrics`` row, so every step paid for that: the tiny world's gates and publish, each in a
fresh process and JVM, used 57.6 / 56.6 and 67.6 / 65.0 CPU-s for the whole process tree that
way, against 51.9 / 51.6 and 58.9 / 63.3 with no Python worker at all (docs/design.md, "No Python
worker outside the UDF").

:func:`rows_frame` hands the rows to the JVM as one Arrow table instead (``createDataFrame`` of a
``pyarrow.Table``): the JVM reads the batches itself, no Python worker starts.
"""
from __future__ import annotations

from typing import Any, Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType


def rows_frame(spark: SparkSession, rows: Sequence[Sequence[Any]], schema: StructType) -> DataFrame:
    """A DataFrame of ``rows`` (tuples in ``schema``'s field order; ``None`` for null) with exactly
    ``schema``: what ``spark.createDataFrame(rows, schema)`` gives, built in the JVM from Arrow.
    A value of the wrong type raises (pyarrow's ``ArrowInvalid`` / ``ArrowTypeError``, naming
    the value) instead of being coerced."""
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_schema

    arrow_schema = to_arrow_schema(schema, timezone="UTC")
    columns = list(zip(*rows)) if rows else [() for _ in schema.fields]
    arrays = [pa.array(list(values), type=field.type) for values, field in zip(columns, arrow_schema)]
    return spark.createDataFrame(pa.Table.from_arrays(arrays, schema=arrow_schema), schema)
