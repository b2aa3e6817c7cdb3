"""A night says what the document windows cut (issue 25 item 1): per source, the documents over
``document.max_lines`` (stage) and over ``encoder.max_length`` (the UDF's own token counts, summed
by the gates step), recorded in run_metrics and warned about; the tokens are still published."""
from __future__ import annotations

import datetime as dt
import json
import logging

from pyspark.sql import functions as F

from pipelines.lake import tables
from pipelines.night.daily_job import run_day
from pipelines.lake.lake import Lake
from tests.pipelines.collide_world import D1, write_collide_world

DAY = dt.date.fromisoformat(D1)
LONG = [(3, dt.datetime.combine(DAY, dt.time(10, i)), DAY, "search",
         f"query {i} about renewing a passport for travel to the coast in the spring season", None, None)
        for i in range(40)]      # 40 distinct lines of ~15 tokens (41 with its own query): over 32 lines and 256 tokens


def test_a_night_counts_what_the_windows_cut_per_source(spark, trained_lake, tmp_path, caplog):
    settings = write_collide_world(spark, trained_lake["root"], tmp_path)
    spark.createDataFrame(LONG, tables.RAW_EVENTS.schema).write.format("delta").mode("append").save(
        Lake(spark, settings).path("raw_events"))
    with caplog.at_level(logging.WARNING):
        result = run_day(spark, settings, D1, run_id="long-night")

    assert result["stage"]["cuts_by_source"] == {"search": {"documents_cut": 1, "lines_cut": 9}}
    truncation = result["truncation"]
    assert truncation["search"]["documents_truncated"] == 1 and truncation["search"]["tokens_cut_share"] > 0
    assert all(t["documents_truncated"] == 0 for s, t in truncation.items() if s != "search")
    assert "tabular" not in truncation
    searches = truncation["search"]["documents"]
    assert truncation["search"]["truncated_share"] == 1 / searches
    warned = [r.getMessage() for r in caplog.records if "longer than encoder.max_length=256" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith(f"{D1}: search: ")
    recorded = (Lake(spark, settings).read("run_metrics")
                .where((F.col("run_id") == "long-night") & (F.col("step") == "quality")).first())
    assert json.loads(recorded["metrics_json"])["truncation"]["search"]["documents_truncated"] == 1
    published = Lake(spark, settings).read("user_day_tokens").where("user_id = 3 AND source = 'search'")
    assert published.count() == 1                                  # cut, counted, still tokenized
