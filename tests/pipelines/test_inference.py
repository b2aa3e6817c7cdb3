"""The inference UDF on the tiny world: codes that do not depend on how rows are batched, equal
to the reference path (each document encoded alone, the full MRQ-VAE eval path), and a failing
row named by user, source and date."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from pyspark.sql import functions as F

from pipelines.night.documents import build_documents
from pipelines.night.inference import InferenceRowError, get_runtime, inference_spec, make_tokenize_udf, run_chunks
from pipelines.lake.lake import Lake


@pytest.fixture(scope="module")
def runtime_and_rows(spark, trained_lake):
    from pipelines.night.day_run import load_tokenizer_info

    settings = trained_lake["settings"]
    info = load_tokenizer_info(settings)
    spec = inference_spec(settings, tabular_sources=info.tabular_sources, model_dir=info.model_dir,
                          tokenizer_version=info.version)
    events = Lake(spark, settings).read("raw_events")
    docs = build_documents(events, settings.sources_config()).orderBy("user_id", "event_date", "source").collect()
    rows = (np.array([r["user_id"] for r in docs], dtype=object), np.array([str(r["event_date"]) for r in docs], dtype=object),
            (np.array([r["source"] for r in docs], dtype=object), np.array([r["document"] for r in docs], dtype=object),
             np.array([None] * len(docs), dtype=object)))
    return spec, get_runtime(spec), rows


def test_codes_do_not_depend_on_batching_and_equal_the_reference(runtime_and_rows):
    spec, runtime, (users, dates, (sources, documents, features)) = runtime_and_rows
    assert len(sources) > 20 and len(set(sources)) > 1
    codes = np.stack(runtime.tokenize(sources, documents, features))
    order = list(range(len(sources)))
    random.Random(0).shuffle(order)
    shuffled = np.stack(runtime.tokenize(sources[order], documents[order], features[order]))
    assert np.array_equal(shuffled[np.argsort(order)], codes)
    small_chunks = type(spec)(**{**spec.__dict__, "batch_rows": 7})
    chunked = np.stack(run_chunks(small_chunks, users, dates, (sources, documents, features), runtime.tokenize))
    assert np.array_equal(chunked, codes)
    # reference: every document alone through the encoder, then the full (loss-computing) eval path
    encoder, model = runtime.embedder.encoder, runtime.model
    for i in range(0, len(sources), 3):
        x = torch.from_numpy(encoder.encode([documents[i]]))
        assert np.array_equal(model.quantize_reference(x, sources[i]).numpy()[0].astype(np.int16), codes[i])


def test_a_failing_row_is_named_by_user_source_and_date(runtime_and_rows):
    spec, runtime, (users, dates, (sources, documents, features)) = runtime_and_rows
    documents = documents.copy()
    documents[5] = "   "  # harden's validation keeps these out; the UDF must still say whose row it was
    with pytest.raises(InferenceRowError, match=rf"user {users[5]!r}, source '{sources[5]}', date {dates[5]}"):
        run_chunks(spec, users, dates, (sources, documents, features), runtime.tokenize)


def test_spark_udf_error_names_the_row(spark, runtime_and_rows):
    spec, _, (users, dates, (sources, documents, _)) = runtime_and_rows
    frame = spark.createDataFrame(
        [(users[i], dates[i], sources[i], documents[i] if i != 2 else "") for i in range(4)],
        "user_id long, event_date string, source string, document string",
    ).withColumn("features", F.lit(None).cast("array<float>"))
    tokenize = make_tokenize_udf(spec)
    with pytest.raises(Exception, match=rf"inference failed on user {users[2]!r}, source '{sources[2]}'"):
        frame.select(tokenize("user_id", "event_date", "source", "document", "features")).collect()


def test_the_udf_returns_codes_and_token_counts_evaluated_once(spark, runtime_and_rows):
    """The struct the stage splits into codes / tokens / tokens_cut: the UDF runs once per row
    (one ArrowEvalPython in the plan) and equals the runtime's own counts."""
    spec, runtime, (users, dates, (sources, documents, features)) = runtime_and_rows
    frame = spark.createDataFrame([(users[i], dates[i], sources[i], documents[i]) for i in range(8)],
                                  "user_id long, event_date string, source string, document string"
                                  ).withColumn("features", F.lit(None).cast("array<float>")).coalesce(1)
    out = (frame.select(make_tokenize_udf(spec)("user_id", "event_date", "source", "document", "features").alias("o"))
           .select("o.codes", "o.tokens", "o.tokens_cut"))
    assert out._jdf.queryExecution().executedPlan().toString().count("ArrowEvalPython") == 1
    expected = runtime.tokenize_counted(sources[:8], documents[:8], features[:8])
    for row, (codes, tokens, cut) in zip(out.collect(), expected):
        assert list(row["codes"]) == codes.tolist() and (row["tokens"], row["tokens_cut"]) == (tokens, cut)
        assert tokens > 0 and cut == 0


def test_row_error_is_recovered_from_a_spark_traceback():
    from pipelines.night.inference import row_error_from

    wrapped = RuntimeError("[PYTHON_EXCEPTION] An exception was thrown from the Python worker:\nTraceback ...\n"
                           "pipelines.errors.InferenceRowError: inference failed on user 7, source 'bill', "
                           "date 2026-01-05: InputError: text at index 0 is empty\n\tat org.apache.spark...")
    err = row_error_from(wrapped)
    assert isinstance(err, InferenceRowError)
    assert str(err) == "inference failed on user 7, source 'bill', date 2026-01-05: InputError: text at index 0 is empty"
    assert row_error_from(RuntimeError("something else")) is None


def test_python_workers_are_forked_with_the_encoder_libraries_imported(spark):
    """A local session (``get_spark``) runs ``pipelines.runtime.python_daemon``: a worker it forks
    (as after Spark ended an idle one) starts with torch and transformers' model stack imported,
    so a cold worker pays only the weights, not ~5.5 CPU-s of imports."""
    from pipelines.runtime.python_daemon import PRELOADED, PRELOADED_ENV
    from pipelines.runtime.spark_session import DAEMON_MODULE

    def probe(_):
        import os
        import sys

        yield os.environ.get(PRELOADED_ENV, ""), all(name in sys.modules for name in PRELOADED)

    assert spark.conf.get("spark.python.daemon.module") == DAEMON_MODULE
    assert spark.sparkContext.parallelize(range(2), 2).mapPartitions(probe).collect() == [(",".join(PRELOADED), True)] * 2
