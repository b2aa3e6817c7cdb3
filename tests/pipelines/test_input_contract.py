"""``u2qt check-inputs``: a lake's own raw_events / user_profile checked against the input
contract (schemas + sources config), one line per difference, on real Delta tables."""
from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from pipelines.cli import main as cli

from pipelines.lake import tables
from pipelines.night.cadence import WINDOW_KEYS
from pipelines.night.input_contract import check_inputs, input_contract
from pipelines.lake.schemas import RAW_EVENTS_SCHEMA, USER_PROFILE_SCHEMA
from pipelines.config.settings import load_sources
from pipelines.lake.lake import Lake
from tests.conftest import make_settings
from tests.pipelines.collide_world import D1, D2, collide_rows


def _lake(spark, root, change_events=lambda f: f, change_profiles=lambda f: f, partition=True):
    """The collide world's tables at ``root`` after ``change_*``; returns its settings."""
    settings = make_settings(root, root / "model")
    frames = {"raw_events": change_events(spark.createDataFrame(EVENTS, RAW_EVENTS_SCHEMA)),
              "user_profile": change_profiles(spark.createDataFrame(PROFILES, USER_PROFILE_SCHEMA))}
    for name, frame in frames.items():
        writer = frame.write.format("delta")
        if name == "raw_events" and partition:
            writer = writer.partitionBy("event_date")
        writer.save(Lake(spark, settings).path(name))
    return settings


WINDOWS = ("encoder.max_length", "document.max_lines")


def _lines(spark, settings, dates=None, windows=False) -> list[str]:
    """check-inputs' lines but the cadence ones (tests/pipelines/test_cadence.py); those about the
    document windows only with ``windows`` (tested apart)."""
    differences, _ = check_inputs(spark, settings, dates)
    return [d.line() for d in differences if not _is_cadence(d) and windows == (d.where in WINDOWS)]


def _is_cadence(difference) -> bool:
    return difference.where in WINDOW_KEYS or difference.message.startswith("cadence over ")


def test_contract_accepts_the_schemas_own_types():
    contract = input_contract(load_sources())
    for table, schema in (("raw_events", RAW_EVENTS_SCHEMA), ("user_profile", USER_PROFILE_SCHEMA)):
        columns = {item.column: item for item in contract[table]}
        assert set(columns) == set(schema.names), table       # every column of the world's tables
        for field in schema.fields:
            assert isinstance(field.dataType, columns[field.name].accepts), (table, field.name)


def _share(n: int, total: int) -> str:
    return f"{n} of {total} rows ({100 * n / total:.2f} %)"


EVENTS, PROFILES = collide_rows()
EVENTS_D1 = [e for e in EVENTS if str(e[2]) == D1]
NAN_ENGAGEMENT = (f"warning: user_profile.engagement: null or NaN in {_share(1, len(PROFILES))}: "
                  "ranked as 0 when their tokens collide")


def test_the_collide_world_differs_only_in_its_bad_rows(spark, tmp_path):
    settings = _lake(spark, tmp_path)
    assert _lines(spark, settings) == [
        f"warning: raw_events: {_share(1, len(EVENTS))} would be quarantined, e.g. 'text is empty'",
        NAN_ENGAGEMENT,
    ]
    # one day only: D2 has no blank line
    assert _lines(spark, settings, [D2]) == [NAN_ENGAGEMENT]


def test_undated_rows_no_night_will_see_are_counted(spark, tmp_path):
    """A null event_date is quarantined by the night of its event_ts (test_bad_input.py); rows
    whose event_ts lies outside the nights checked are reported, since no night sees them."""
    import datetime as dt

    undated = [(3, dt.datetime(2026, 1, 9, 8, 0), None, "search", "late", None, None),
               (3, dt.datetime(2026, 1, 5, 8, 0), None, "search", "on D1", None, None)]
    settings = _lake(spark, tmp_path, change_events=lambda f: f.unionByName(spark.createDataFrame(undated, RAW_EVENTS_SCHEMA)))

    def undated_line(dates):
        found = [line for line in _lines(spark, settings, dates) if line.startswith("warning: raw_events.event_date:")]
        assert len(found) <= 1
        return found[0] if found else None

    assert undated_line(None).startswith(
        "warning: raw_events.event_date: 1 rows have a null event_date and an event_ts outside the nights checked "
        "(the first to last event_date of the table), e.g. on 2026-01-09: no night sees them")
    assert "`u2qt run-day 2026-01-09`" in undated_line(None)
    assert undated_line([D1]).startswith("warning: raw_events.event_date: 1 rows have a null event_date and an "
                                         f"event_ts outside the nights checked ({D1}..{D1}), e.g. on 2026-01-09")
    assert undated_line([D2]).startswith("warning: raw_events.event_date: 2 rows ")
    assert undated_line(["2026-01-05", "2026-01-09"]) is None


def test_long_documents_get_truncation_lines_with_suggested_settings(spark, tmp_path):
    """User 3 searches 40 distinct long queries on D1: over document.max_lines (32) and, at 32
    lines of ~15 tokens, over encoder.max_length (256); every other document fits both."""
    import datetime as dt

    day = dt.date.fromisoformat(D1)
    queries = [(3, dt.datetime.combine(day, dt.time(10, i)), day, "search",
                f"query {i} about renewing a passport for travel to the coast in the spring season", None, None)
               for i in range(40)]
    settings = _lake(spark, tmp_path, change_events=lambda f: f.unionByName(spark.createDataFrame(queries, RAW_EVENTS_SCHEMA)))
    lines = _lines(spark, settings, [D1], windows=True)
    searches = len({(e[0], e[3]) for e in EVENTS_D1 if e[3] == "search"} | {(3, "search")})
    share = f"{100 / searches:.1f}%"
    tokens = [line for line in lines if line.startswith("warning: encoder.max_length: search: ")]
    assert len(tokens) == 1 and tokens[0].startswith(
        f"warning: encoder.max_length: search: {share} of {searches} sampled documents exceed 256 tokens")
    assert "set encoder.max_length: " in tokens[0] or "use a longer-context encoder" in tokens[0]
    assert f"warning: document.max_lines: search: {share} of {searches} documents have more than 32 distinct lines" \
        in " ".join(lines)
    notes = [line for line in lines if line.startswith("note: ")]
    assert [n.split(":")[1].strip() for n in notes] == list(WINDOWS)
    assert all("search" not in n for n in notes) and "bill p90" in notes[0]


def test_own_data_with_other_names_and_values_is_reported_line_by_line(spark, tmp_path, capsys):
    renamed = F.when(F.col("source") == "search", "queries").otherwise(F.col("source"))
    settings = _lake(
        spark, tmp_path,
        change_events=lambda f: f.withColumn("source", renamed).drop("status"),
        change_profiles=lambda f: (f.withColumn("device_os", F.when(F.col("user_id") == 2, "windows").otherwise(F.col("device_os")))
                                   .withColumn("region", F.lit("north"))),
        partition=False)
    searches = sum(e[3] == "search" for e in EVENTS_D1)
    assert _lines(spark, settings, [D1]) == [
        "note: raw_events.status: absent (read by u2qt paper-eval on the synthetic world only)",
        "note: raw_events: partitioned by nothing, not [event_date]: every night then scans the whole table, not its own day",
        "warning: raw_events.source: no rows name source 'search' of the sources config: its tokens will all be missing",
        f"warning: raw_events.source: 'queries' in {_share(searches, len(EVENTS_D1))} is not a text source of "
        "conf/sources.yaml: quarantined every night (add it to text_sources, or rename it)",
        f"warning: raw_events: {_share(1, len(EVENTS_D1))} would be quarantined, e.g. 'text is empty'",
        "note: user_profile.region: not read by the night (not in the contract or the sources config)",
        NAN_ENGAGEMENT,
        "warning: user_profile.device_os: values outside ['ios', 'android', 'harmonyos'] in "
        f"{_share(1, len(PROFILES))}: "
        "'windows' (1); they become all zeros (add them to values)",
    ]
    with pytest.raises(SystemExit) as exit_info:        # warnings only: exit 0, or 1 with --strict
        cli.run(["check-inputs", D1, "--set", f"tables_root={settings.tables_root}"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"checked raw_events {len(EVENTS_D1)} rows, user_profile {len(PROFILES)} rows: 0 errors, 5 warnings, 9 notes")
        # + the two document windows, the cadence and its 3 windows
    with pytest.raises(SystemExit) as exit_info:
        cli.run(["check-inputs", D1, "--strict", "--set", f"tables_root={settings.tables_root}"])
    assert exit_info.value.code == 1


def test_missing_and_mistyped_columns_are_errors_and_the_cli_exits_1(spark, tmp_path, capsys):
    settings = _lake(
        spark, tmp_path,
        change_events=lambda f: f.withColumn("amount", F.col("amount").cast("string")),
        change_profiles=lambda f: f.drop("engagement").withColumn("age", F.col("age").cast("string")))
    with pytest.raises(SystemExit) as exit_info:
        cli.run(["check-inputs", "--set", f"tables_root={settings.tables_root}"])
    assert exit_info.value.code == 1
    assert capsys.readouterr().out.splitlines() == [
        "error: raw_events.amount: is string, needs byte or decimal or double or float or integer or long or short "
        "(checked against validation.amount_range (may be null))",
        "error: user_profile.engagement: missing column (byte or decimal or double or float or integer or long or short; "
        "ranks users whose token tuples collide (null ranks as 0))",
        "error: user_profile.age: is string, needs byte or decimal or double or float or integer or long or short "
        "(tabular feature (scale))",
        "checked nothing: 3 errors, 0 warnings, 0 notes",
    ]
    assert tables.table_exists(spark, Lake(spark, settings).path("raw_events"))      # the check writes nothing else
