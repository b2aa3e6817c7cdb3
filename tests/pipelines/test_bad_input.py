"""Every kind of bad input row on one night: each is quarantined with its reason (or, for
control characters, sanitised), every injected row is counted, and the rest of the night is
published exactly as without them. One Spark night for all kinds.

The world is the collide world's D1 (tests/pipelines/collide_world.py), whose uninterrupted run
(the ``collided`` fixture) is the reference for the good users' codes, plus the rows below.
"""
from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from dataclasses import asdict

import pytest
from pyspark.sql import functions as F

from pipelines.lake import tables
from pipelines.night.publish import publish
from pipelines.night.quality import check_quality
from pipelines.night.stage import stage
from pipelines.night.day_run import DayRun, open_run
from pipelines.night.quality import QualityGateFailed
from pipelines.lake.lake import Lake
from tests.conftest import make_settings
from tests.pipelines.collide_world import D1, D2, collide_rows

INVALID_UTF8 = "<invalid utf-8>"          # replaced by the bytes 'Paid ' + C3 28 (a broken 2-byte sequence)
DAY = dt.date.fromisoformat(D1)
TS = dt.datetime.combine(DAY, dt.time(12, 0))
NEXT_DAY_TS = dt.datetime.combine(dt.date.fromisoformat(D2), dt.time(0, 30))

#: (user_id, event_ts, event_date, source, text, amount, status) -> the reason it is quarantined with
BAD_EVENTS = [
    ((2, TS, DAY, "bill", INVALID_UTF8, 5.0, "success"), "text is not valid UTF-8"),
    ((1, TS, DAY, "search", " \t\u3000\n", None, None), "text is empty"),
    ((3, TS, DAY, "search", "x" * 2001, None, None), "text is 2001 characters, over validation.max_text_chars (2000)"),
    ((3, TS, DAY, "bogus", "hello", None, None), "unknown source 'bogus' (known: bill, spm, mini, app, search)"),
    ((3, TS, DAY, None, "hello", None, None), "source is null"),
    ((None, TS, DAY, "search", "hello", None, None), "user_id is null"),
    ((3, None, DAY, "search", "hello", None, None), "event_ts is null"),
    ((3, TS, None, "search", "hello", None, None), "event_date is null (event_ts 2026-01-05 12:00:00)"),
    ((3, None, None, "search", "undatable", None, None), "event_ts is null"),
    ((3, NEXT_DAY_TS, DAY, "search", "hello", None, None),
     "event_ts 2026-01-06 00:30:00 is not on event_date 2026-01-05"),
    ((1, TS, DAY, "bill", "Paid NaN", float("nan"), "success"), "amount is NaN"),
    ((1, TS, DAY, "bill", "Paid inf", float("inf"), "success"), "amount is Infinity"),
    ((1, TS, DAY, "bill", "Paid a lot", -1e12, "success"),
     "amount -1.0E12 is outside [-1e+07, 1e+07] (validation.amount_range)"),
]
#: users 41-43: a valid event, a profile that must be quarantined (they keep their text tokens)
BAD_PROFILES = {41: ("avg_balance", float("nan"), "user_profile.avg_balance is NaN"),
                42: ("avg_balance", float("-inf"), "user_profile.avg_balance is -Infinity"),
                43: ("age", 500, "user_profile.age 500.0 is outside [0, 130] (range in the sources config)")}
CONTROL_TEXT = "Opened\x07Keep for 40 minutes"    # user 40: sanitised to user 2's app line


def _bad_world(spark, trained_root, root):
    import shutil

    shutil.copytree(trained_root / "model", root / "model")
    settings = make_settings(root / "lake", root / "model")    # the default quarantine gate
    events, profiles = collide_rows()
    events = [e for e in events if e[2] == DAY]
    profiles = [p for p in profiles if p[1] == DAY]
    duplicate = next(e for e in events if e[0] == 3)
    events += [duplicate] + [row for row, _ in BAD_EVENTS]
    events += [(40, TS, DAY, "app", CONTROL_TEXT, None, None)]
    template = dict(zip(tables.USER_PROFILE.schema.names, next(p for p in profiles if p[0] == 2)))
    events += [(uid, TS, DAY, "search", "how to renew a passport", None, None) for uid in BAD_PROFILES]
    changes = {40: {}, **{uid: {column: value} for uid, (column, value, _) in BAD_PROFILES.items()}}
    for uid, change in changes.items():
        profiles.append(tuple({**template, "user_id": uid, **change}[c] for c in tables.USER_PROFILE.schema.names))
    frames = {tables.RAW_EVENTS: spark.createDataFrame(events, tables.RAW_EVENTS.schema),
              tables.USER_PROFILE: spark.createDataFrame(profiles, tables.USER_PROFILE.schema)}
    broken = F.concat(F.lit("Paid ").cast("binary"), F.unhex(F.lit("C328"))).cast("string")
    frames[tables.RAW_EVENTS] = frames[tables.RAW_EVENTS].withColumn(
        "text", F.when(F.col("text") == INVALID_UTF8, broken).otherwise(F.col("text")))
    for spec, frame in frames.items():
        writer = frame.write.format("delta")
        if spec.partition_by:
            writer = writer.partitionBy(*spec.partition_by)
        writer.save(Lake(spark, settings).path(spec.name))
    return settings, len(events)


@pytest.fixture(scope="module")
def bad_night(spark, trained_lake, tmp_path_factory):
    """The bad night staged once, gated at the default ``max_quarantine_rate`` (it fails: nothing
    is published), then gated with the gate open and published."""
    settings, raw_rows = _bad_world(spark, trained_lake["root"], tmp_path_factory.mktemp("bad-input"))
    run = open_run(spark, settings, D1, "bad-night")
    staged = stage(run)
    with pytest.raises(QualityGateFailed) as failure:
        check_quality(run)
    published_before = tables.table_exists(spark, run.path("user_day_tokens")) and \
        Lake(spark, settings).read("user_day_tokens").count()
    quality = run.settings.quality.model_copy(update={"max_quarantine_rate": 1.0})
    lenient = DayRun(spark, run.settings.model_copy(update={"quality": quality}), D1, run.run_id, run.tokenizer)
    metrics = {"stage": asdict(staged), **check_quality(lenient), "publish": publish(lenient)}
    return {"settings": lenient.settings, "metrics": metrics, "raw_rows": raw_rows,
            "gate_failure": str(failure.value), "published_before": published_before}


def test_the_default_quarantine_gate_stops_the_bad_night(spark, bad_night):
    import re

    # the gate's rate: the date's quarantined raw rows over its raw_events partition and them
    rate = bad_night["metrics"]["quarantine_rate"]
    assert rate > 0.05 and rate == bad_night["metrics"]["quarantined_rows"] / bad_night["metrics"]["raw_rows"]
    assert re.search(rf"quarantine rate {rate:.4f} > max_quarantine_rate 0\.05$", bad_night["gate_failure"])
    assert not bad_night["published_before"]
    steps = (Lake(spark, bad_night["settings"]).read("run_metrics")
             .where((F.col("run_id") == "bad-night") & (F.col("step") != "drift")))   # drift: test_token_quality.py
    assert [(r["step"], r["status"]) for r in steps.orderBy("recorded_at").collect()][1:] == [
        ("stage", "ok"), ("quality", "failed"), ("quality", "ok"), ("publish", "ok")]


def test_every_bad_row_is_quarantined_with_its_reason(spark, bad_night):
    settings, stage = bad_night["settings"], bad_night["metrics"]["stage"]
    quarantine = Lake(spark, settings).read("quarantine").where(F.col("event_date") == D1)
    events = Counter(r["reason"] for r in quarantine.where("source_table = 'raw_events'").collect())
    expected = Counter(reason for _, reason in BAD_EVENTS)
    expected["text is empty"] += 1                 # the collide world's own blank line of user 1
    expected["exact duplicate of another raw_events row (one copy kept)"] += 1
    assert events == expected
    # every row is counted on this night: the injected ones, the null-dated and the undatable too
    assert stage["raw_rows"] == bad_night["raw_rows"]
    assert stage["quarantined_rows"] == sum(expected.values()) and stage["duplicate_rows"] == 1
    rows = [(r["source_table"], r["reason"], json.loads(r["row_json"])) for r in quarantine.collect()]
    profiles = {row["user_id"]: reason for table, reason, row in rows if table == "user_profile"}
    assert profiles == {uid: reason for uid, (_, _, reason) in BAD_PROFILES.items()}
    # the quarantined copy of the invalid UTF-8 row is readable JSON (U+FFFD for the bad bytes)
    assert [row["text"] for _, reason, row in rows if reason == "text is not valid UTF-8"] == ["Paid \ufffd("]
    assert sum(1 for table, _, row in rows if table == "raw_events" and row["event_date"] is None) == 2


def test_the_rest_of_the_night_is_published_as_without_bad_rows(spark, bad_night, collided):
    settings = bad_night["settings"]
    key = ["user_id", "source"]
    got = {(r["user_id"], r["source"]): r["codes"] for r in
           Lake(spark, settings).read("user_day_tokens").where(F.col("event_date") == D1).collect()}
    reference = {(r["user_id"], r["source"]): r["codes"] for r in
                 Lake(spark, collided["settings"]).read("user_day_tokens").where(F.col("event_date") == D1)
                 .select(*key, "codes").collect()}
    assert {k: got[k] for k in reference} == reference          # the duplicate changed nobody's codes
    assert got[(40, "app")] == reference[(2, "app")]           # control character -> space: the same line
    for uid in BAD_PROFILES:                                   # text tokens kept, tabular token skipped
        assert (uid, "search") in got and (uid, "tabular") not in got
    assert set(got) - set(reference) == {(40, "app"), (40, "tabular"), *[(u, "search") for u in BAD_PROFILES]}
    identities = Lake(spark, settings).read("user_tokens").select("user_id", "engagement").collect()
    assert {r["user_id"] for r in identities} == {k[0] for k in got}


def test_another_tokenizer_version_fails_the_stage_before_inference(spark, collided, tmp_path):
    """The version check runs first in stage (not at publish after inference), and the failed
    stage is recorded in run_metrics with its error."""
    from dataclasses import replace

    from delta.tables import DeltaTable

    from pipelines.night.day_run import DayRun, load_tokenizer_info
    from pipelines.night.stage import stage
    from pipelines.lake.tables import TokenizerVersionMismatch
    from tests.pipelines.conftest import copy_lake

    settings = copy_lake(collided, tmp_path)
    staging = DeltaTable.forPath(spark, Lake(spark, settings).path("staging_day_tokens"))
    version_before = staging.history(1).first()["version"]
    other = replace(load_tokenizer_info(settings), version="u2qt-another-version")
    with pytest.raises(TokenizerVersionMismatch, match="u2qt-another-version"):
        stage(DayRun(spark, settings, D2, "other-tokenizer", other))
    assert staging.history(1).first()["version"] == version_before          # nothing staged, no inference
    failed = Lake(spark, settings).read("run_metrics").where(F.col("run_id") == "other-tokenizer").collect()
    assert [(r["step"], r["status"]) for r in failed] == [("stage", "failed")]
    error = json.loads(failed[0]["metrics_json"])["error"]
    assert error.startswith("TokenizerVersionMismatch: table ") and "u2qt-another-version" in error
