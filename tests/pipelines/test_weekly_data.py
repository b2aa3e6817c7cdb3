"""Your own data, weekly and long (issue 25 item 6): a lake whose users are active once a week, some
with documents longer than the encoder's window, goes through ``check-inputs``, ``train``,
``evaluate``, ``promote`` (without ``--force``) and a night, on real Spark, Delta and MLflow.

What it shows: the cadence and window lines and the truncation warning with a suggested setting
before the first night; a held-out week of 60 users (fewer than the codebook's codes at some
levels) that the promotion gates judge soundly (utilization over min(K, rows), the probe skipped
with a note when there are no labels); and the night's ``run_metrics`` carrying the truncation
counts."""
from __future__ import annotations

import datetime as dt
import json
import random

import pytest

from pipelines.cli import main as cli
from pipelines.lake.schemas import RAW_EVENTS_SCHEMA, USER_PROFILE_SCHEMA
from pipelines.lake.lake import Lake
from tests.conftest import make_settings

START, WEEKS, USERS = dt.date(2026, 2, 2), 8, 60
LONG_EVERY = 4            # every 4th user writes long documents
MAX_LENGTH = 48           # the encoder's window in this test (tokens)
WORDS = ("coffee tea train ticket groceries rent phone bill cinema books shoes pharmacy taxi lunch dinner "
         "gym music games hotel flight insurance gift flowers bakery market fuel parking toys garden").split()


def _lake(spark, root):
    settings = make_settings(root / "lake", root / "model", encoder={"max_length": MAX_LENGTH},
                             gates={"heldout_days": 7, "max_collision_rate": 0.05})
    sources = list(settings.sources_config().text_sources)[:2]
    rng = random.Random(7)
    events = []
    for user in range(1, USERS + 1):
        for week in range(WEEKS):
            day = START + dt.timedelta(days=7 * week + user % 7)
            for s, source in enumerate(sources):
                long = user % LONG_EVERY == 0
                for i in range(12 if long else rng.randint(1, 4)):
                    words = rng.sample(WORDS, 8 if long else 3)
                    events.append((user, dt.datetime.combine(day, dt.time(8 + s, i)), day, source,
                                   " ".join(words) + f" {rng.randint(1, 999)}", float(rng.randint(1, 300)), None))
    profiles = [(u, START, 20 + u % 50, "F" if u % 2 else "M", 1 + u % 3, 100 + u, u % 4, 1000.0 * (u % 9),
                 500 + u, ("ios", "android")[u % 2], u % 5 == 0, float(u % 11)) for u in range(1, USERS + 1)]
    spark.createDataFrame(events, RAW_EVENTS_SCHEMA).write.format("delta").partitionBy("event_date").save(
        Lake(spark, settings).path("raw_events"))
    spark.createDataFrame(profiles, USER_PROFILE_SCHEMA).write.format("delta").save(Lake(spark, settings).path("user_profile"))
    return settings, sources


@pytest.fixture(scope="module")
def weekly(spark, tmp_path_factory):
    return _lake(spark, tmp_path_factory.mktemp("weekly-long"))


def test_check_inputs_reports_the_cadence_windows_and_truncation(spark, weekly, capsys):
    settings, sources = weekly
    with pytest.raises(SystemExit) as exited:
        cli.run(["check-inputs", "--set", f"tables_root={settings.tables_root}",
                 "--set", f"encoder.max_length={MAX_LENGTH}", "--set", "features.window_days=5"])
    out = capsys.readouterr().out.splitlines()
    assert exited.value.code == 0, out                   # warnings only
    cadence = next(line for line in out if "cadence over" in line)
    assert "median 7, p90 7" in cadence, cadence
    window = next(line for line in out if line.startswith("warning: features.window_days: 5 days"))
    assert "set features.window_days: 7 or more" in window, window
    cut = [line for line in out if line.startswith("warning: encoder.max_length:")]
    assert {line.split(":")[2].strip() for line in cut} == set(sources), out
    assert all(f"exceed {MAX_LENGTH} tokens" in line and "set encoder.max_length:" in line for line in cut), cut


def test_train_evaluate_promote_without_force_then_a_night_records_truncation(spark, weekly):
    from pipelines.night.daily_job import run_day
    from pipelines.tokenizer.promotion_gates import evaluate
    from pipelines.tokenizer.registry import promote
    from pipelines.tokenizer.train_job import train

    settings, sources = weekly
    summary = train(spark, settings)
    assert all(summary["truncation"][s]["truncated_share"] > 0 for s in sources), summary["truncation"]
    version = summary["tokenizer_version"]

    result = evaluate(spark, settings, version)
    gates = result["gates"]
    assert gates["probe_auc"].get("skipped"), gates["probe_auc"]        # no user_labels on this lake
    assert result["passed"], {k: g for k, g in gates.items() if not g["passed"]}
    assert promote(settings, version).tokenizer_version == version      # no force

    last_week = START + dt.timedelta(days=7 * (WEEKS - 1))
    day = (last_week + dt.timedelta(days=3)).isoformat()
    run_day(spark, settings, day, run_id=f"weekly-{day}")
    row = (spark.read.format("delta").load(Lake(spark, settings).path("run_metrics"))
           .where(f"event_date = DATE'{day}' AND step = 'quality' AND status = 'ok'").first())
    truncation = json.loads(row["metrics_json"])["truncation"]
    for source in sources:
        assert truncation[source]["documents_truncated"] > 0 and 0 < truncation[source]["truncated_share"] < 1
