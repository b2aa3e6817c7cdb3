"""Issue #27 item 2: each distinct (source, document) of a stage pass embedded once.

On a world where half the documents repeat other users' (``repeat_document_share``), a stage
of two dates with ``inference.dedup_documents`` on and one with it off write the same staged
rows -- codes, token counts and the #26 residual, every field the UDF returns -- for every (user, source, date), and the encoder sees exactly
one row per distinct (source, document) of the pass (``documents_embedded`` in ``run_metrics``)."""
from __future__ import annotations

import json

import pytest
from pyspark.sql import functions as F

from pipelines.night.day_run import DayRun, load_tokenizer_info
from pipelines.night.documents import build_documents
from pipelines.night.stage import stage_dates
from pipelines.night.validation import check_raw_events
from pipelines.world import write_world
from pipelines.lake.lake import Lake

STAGED = ["user_id", "event_date", "source", "codes", "tokens", "tokens_cut", "residual"]


@pytest.fixture
def repeats_lake(spark, fresh_lake, tiny_world_config):
    """The trained lake's tokenizer over a tiny world whose documents repeat half the time."""
    world = tiny_world_config.model_copy(update={"repeat_document_share": 0.5, "repeat_document_pool": 3})
    write_world(spark, world, fresh_lake.tables_root)
    return fresh_lake, [d.isoformat() for d in world.history_dates()]


def _stage(spark, settings, dates: list[str], dedup: bool, run_id: str):
    settings = settings.model_copy(update={"inference": settings.inference.model_copy(update={"dedup_documents": dedup})})
    info = load_tokenizer_info(settings)
    results = stage_dates([DayRun(spark, settings, d, f"{run_id}-{d}", info) for d in dates])
    staged = Lake(spark, settings).read("staging_day_tokens").select(*STAGED).collect()
    return results, {(r["user_id"], str(r["event_date"]), r["source"]):
                     (tuple(r["codes"]), r["tokens"], r["tokens_cut"], round(r["residual"], 5)) for r in staged}


def test_dedup_on_and_off_stage_the_same_codes_and_embed_each_document_once(spark, repeats_lake):
    settings, dates = repeats_lake
    off_results, off = _stage(spark, settings, dates, dedup=False, run_id="off")
    on_results, on = _stage(spark, settings, dates, dedup=True, run_id="on")

    assert len(off) == sum(r.token_rows for r in off_results.values()) > 50
    assert on == off                       # every (user, source, date): codes, tokens, tokens_cut, residual

    events = Lake(spark, settings).read("raw_events").where(F.col("event_date").isin(dates))
    documents = build_documents(check_raw_events(events, settings.sources_config(), settings.validation).valid,
                                settings.sources_config())
    per_date = {str(r["event_date"]): r["count"] for r in documents.groupBy("event_date").count().collect()}
    distinct = documents.select("source", "document").distinct().count()
    assert distinct < 0.75 * sum(per_date.values())         # the world does repeat: the check can fail
    for d in dates:
        assert off_results[d].documents == on_results[d].documents == per_date[d]
        assert off_results[d].documents_embedded == per_date[d]
    # one encoder row per distinct (source, document) of the pass (both dates folded together)
    assert sum(r.documents_embedded for r in on_results.values()) == distinct

    metrics = (Lake(spark, settings).read("run_metrics")
               .where((F.col("step") == "stage") & F.col("run_id").startswith("on-")).collect())
    recorded = {str(r["event_date"]): json.loads(r["metrics_json"]) for r in metrics}
    assert {d: (m["documents"], m["documents_embedded"]) for d, m in recorded.items()} == \
        {d: (on_results[d].documents, on_results[d].documents_embedded) for d in dates}
