"""Defaults that follow the data: a lake of weekly users over 120 days, its cadence and what the
configured windows drop (``u2qt check-inputs``), and the warning of the commands that read a
window (``u2qt features``, ``u2qt train-sequence``), on real Spark and Delta tables. The expected
numbers are recomputed here in plain Python."""
from __future__ import annotations

import datetime as dt
import logging

import pytest

from pipelines.cli import main as cli
from pipelines.night.cadence import cadence_differences, check_window, measure_cadence
from pipelines.lake.schemas import RAW_EVENTS_SCHEMA, USER_PROFILE_SCHEMA
from pipelines.config.settings import load_settings
from pipelines.lake.lake import Lake
from tests.conftest import make_settings
from u2qt_core.errors import ConfigError

START, NEWEST = dt.date(2026, 1, 1), dt.date(2026, 4, 30)     # 120 days
FEATURES_DAYS = 10          # the test's features.window_days; history_days 28 and max_days 180 as shipped


def _active() -> dict[int, list[dt.date]]:
    """Users 1-40 weekly to the end, 41-60 every 14 days to the end, 61-70 weekly for the first
    60 days only, 71-75 on one date each."""
    span = (NEWEST - START).days
    days: dict[int, list[int]] = {}
    for user in range(1, 41):
        days[user] = list(range(user % 7, span + 1, 7))
    for user in range(41, 61):
        days[user] = list(range(user % 14, span + 1, 14))
    for user in range(61, 71):
        days[user] = list(range(user % 7, 60, 7))
    for user in range(71, 76):
        days[user] = [(user - 71) * 25 + 3]
    return {user: [START + dt.timedelta(days=d) for d in ds] for user, ds in days.items()}


ACTIVE = _active()


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    """The weekly lake, written once (read-only for the tests); ``raw_events`` is not partitioned
    (one file instead of one per date: the checks read it whole anyway)."""
    return _lake(spark, tmp_path_factory.mktemp("weekly-lake"))


def _lake(spark, root):
    settings = make_settings(root, root / "model", features={"window_days": FEATURES_DAYS})
    sources = list(settings.sources_config().text_sources)
    events = [(user, dt.datetime.combine(day, dt.time(9, i)), day, sources[user % len(sources)], f"line {i}", None, None)
              for user, days in ACTIVE.items() for day in days for i in range(1 + (user % 5 == 0))]
    profiles = [(user, START, 34, "F", 2, 900, 3, 5200.0, 710, "ios", False, 0.5) for user in ACTIVE]
    spark.createDataFrame(events, RAW_EVENTS_SCHEMA).coalesce(1).write.format("delta").save(
        Lake(spark, settings).path("raw_events"))
    spark.createDataFrame(profiles, USER_PROFILE_SCHEMA).write.format("delta").save(Lake(spark, settings).path("user_profile"))
    return settings, len(events)


def _rank(values: list[int], share: float) -> int:
    """Nearest-rank percentile: the ceil(share * n)-th smallest (share in tenths, exact)."""
    tenths = round(share * 10)
    return sorted(values)[-(-len(values) * tenths // 10) - 1]


def _expected_lines(share: float = 0.9) -> list[str]:
    users, rows = len(ACTIVE), sum(len(d) for d in ACTIVE.values())
    gaps = [(b - a).days for days in ACTIVE.values() for a, b in zip(days, days[1:])]
    single = sum(len(d) == 1 for d in ACTIVE.values())
    recency = [(NEWEST - max(d)).days for d in ACTIVE.values()]
    keeping = _rank(recency, share) + 1

    def pct(n, total):
        return f"{100.0 * n / total:.2f} %"

    lines = ["note: raw_events: partitioned by nothing, not [event_date]: every night then scans the whole table, "
             "not its own day",
             f"note: raw_events: cadence over {START}..{NEWEST}: days between a user's consecutive active dates: "
             f"median {_rank(gaps, 0.5)}, p90 {_rank(gaps, 0.9)}; {single} of {users} users ({pct(single, users)}) "
             f"active on a single date; {rows:,} (user, date) rows"]
    for key, n in (("features.window_days", FEATURES_DAYS), ("sequence_encoder.history_days", 28),
                   ("history.max_days", 180)):
        first = NEWEST - dt.timedelta(days=n - 1)
        dropped = sum(max(d) < first for d in ACTIVE.values())
        dropped_rows = sum(day < first for d in ACTIVE.values() for day in d)
        line = (f"{n} days ({first}..{NEWEST}, ending at the newest event_date) drop {dropped} of {users} active users "
                f"({pct(dropped, users)}) and {dropped_rows:,} of {rows:,} (user, date) rows ({pct(dropped_rows, rows)})")
        if users - dropped < share * users:
            lines.append(f"warning: {key}: {line}: it keeps under inputs.min_window_user_share {share:g} of them; "
                         f"set {key}: {keeping} or more to keep {share:.0%}")
        else:
            lines.append(f"note: {key}: {line}")
    return lines


def test_the_lake_is_what_the_test_means():
    """Weekly and fortnightly users: a 10-day and a 28-day window each drop over 10 % of them."""
    expected = _expected_lines()
    assert [line.split(":")[0] for line in expected] == ["note", "note", "warning", "warning", "note"]
    assert "median 7, p90 14" in expected[1]


def test_check_inputs_reports_the_cadence_and_what_each_window_drops(spark, lake, capsys):
    settings, n_events = lake
    with pytest.raises(SystemExit) as exit_info:        # warnings only: exit 0
        cli.run(["check-inputs", "--set", f"tables_root={settings.tables_root}",
                 "--set", f"features.window_days={FEATURES_DAYS}"])
    assert exit_info.value.code == 0
    out = [line for line in capsys.readouterr().out.splitlines()      # the document windows: test_truncation.py
           if not line.startswith(("note: encoder.max_length:", "note: document.max_lines:"))]
    assert out == [*_expected_lines(),                  # nothing else differs on this lake
                   f"checked raw_events {n_events:,} rows, user_profile {len(ACTIVE)} rows: 0 errors, 2 warnings, 5 notes"]
    # the suggestion keeps the share, one day less does not (the same pass, other windows)
    keeping = int(out[2].rsplit(": ", 1)[1].split()[0])
    raw = spark.read.format("delta").load(Lake(spark, settings).path("raw_events"))
    cadence = measure_cadence(raw, {"enough": keeping, "short": keeping - 1}, 0.9)
    kept = [cadence.users - w.users_dropped for w in cadence.windows]
    assert kept[0] >= 0.9 * cadence.users > kept[1]
    # a looser share: the 28-day window is then a note
    looser = settings.model_copy(update={"inputs": settings.inputs.model_copy(update={"min_window_user_share": 0.8})})
    assert [d.line() for d in cadence_differences(raw, looser)] == _expected_lines(0.8)[1:]
    assert _expected_lines(0.8)[3].startswith("note: sequence_encoder.history_days: 28 days")


def test_commands_warn_when_their_window_holds_too_few_users(spark, lake, caplog):
    """What ``u2qt features`` / ``u2qt train-sequence`` run on user_day_tokens before reading
    their window, here on a frame of the same (user_id, event_date) columns."""
    settings, _ = lake
    days = spark.read.format("delta").load(Lake(spark, settings).path("raw_events"))
    as_of = NEWEST - dt.timedelta(days=20)           # not the newest date: later rows are not counted
    first = as_of - dt.timedelta(days=6)
    users = [u for u, d in ACTIVE.items() if min(d) <= as_of]
    inside = [u for u in users if any(first <= day <= as_of for day in ACTIVE[u])]
    recency = sorted((as_of - max(day for day in ACTIVE[u] if day <= as_of)).days for u in users)
    keeping = recency[-(-len(users) * 9 // 10) - 1] + 1

    with caplog.at_level(logging.WARNING, logger="pipelines.night.cadence"):
        coverage = check_window(days, as_of.isoformat(), 7, "features.window_days", settings)
    assert (coverage.users, coverage.in_window, coverage.keeping_days) == (len(users), len(inside), keeping)
    assert [r.getMessage() for r in caplog.records] == [
        f"features.window_days 7 ({first}..{as_of}) holds {len(inside)} of {len(users)} users with user_day_tokens "
        f"rows up to {as_of} ({100.0 * len(inside) / len(users):.2f} %), under inputs.min_window_user_share 0.9: "
        f"set features.window_days: {keeping} or more (see `u2qt check-inputs` for the data's cadence)"]

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pipelines.night.cadence"):
        check_window(days, as_of.isoformat(), keeping, "sequence_encoder.history_days", settings)
    assert caplog.records == []


def test_the_share_is_validated_and_named():
    with pytest.raises(ConfigError, match="inputs.min_window_user_share"):
        load_settings(overrides={"tables_root": "x", "model_dir": "y", "inputs": {"min_window_user_share": 1.5}})
