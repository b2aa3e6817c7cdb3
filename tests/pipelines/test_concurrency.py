"""Two dates at once: staging runs in parallel, publishing is serialised by the publish lock, and
Delta conflicts (two runs creating one table) are retried; the result equals the in-order run."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from pyspark.sql import functions as F

from pipelines.lake.views import read_view
from pipelines.lake.concurrency import LockTimeout, publish_lock, retry_on_conflict
from pipelines.night.daily_job import run_day
from pipelines.lake.lake import Lake
from tests.pipelines.collide_world import D1, D2, assert_consistent, identity_rows, write_collide_world


def test_two_dates_in_parallel_equal_the_in_order_run(spark, collided, trained_lake, tmp_path):
    settings = write_collide_world(spark, trained_lake["root"], tmp_path)
    with ThreadPoolExecutor(max_workers=2) as pool:   # no init-tables: the runs race to create every table
        results = list(pool.map(lambda d: run_day(spark, settings, d, run_id=f"parallel-{d}"), (D2, D1)))
    assert all(r["publish"]["token_rows"] > 0 for r in results)
    assert identity_rows(spark, settings) == collided["after"][D2][0]
    assert_consistent(spark, settings)
    columns = ["user_id", "source", "dates", "tokens"]
    got = read_view(Lake(spark, settings), "user_token_history").select(*columns).orderBy("user_id", "source")
    expected = read_view(Lake(spark, collided["settings"]), "user_token_history").select(*columns).orderBy("user_id", "source")
    assert got.collect() == expected.collect()
    publishes = Lake(spark, settings).read("run_metrics").where(F.col("step") == "publish")
    assert publishes.count() == 2


def test_publish_lock_admits_one_holder_at_a_time(tmp_path):
    inside, overlaps = [], []

    def hold(name: str) -> None:
        with publish_lock(tmp_path, timeout_s=30, poll_s=0.01):
            if inside:
                overlaps.append((name, list(inside)))
            inside.append(name)
            time.sleep(0.2)
            inside.remove(name)

    threads = [threading.Thread(target=hold, args=(f"t{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == []
    with publish_lock(tmp_path):
        with pytest.raises(LockTimeout, match="publish.lock"):
            with publish_lock(tmp_path, timeout_s=0.05, poll_s=0.01):
                pass


def test_retry_on_conflict_retries_only_conflicts():
    from delta.exceptions.base import ConcurrentAppendException

    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConcurrentAppendException("concurrent append")
        return "done"

    assert retry_on_conflict(flaky, "test", attempts=3, base_s=0.001) == "done" and len(calls) == 3
    with pytest.raises(ValueError):
        retry_on_conflict(lambda: (_ for _ in ()).throw(ValueError("not a conflict")), "test", base_s=0.001)


def test_a_lost_create_race_is_retried(tmp_path):
    """The CI failure of 2026-12-04: the loser of a create race saw the winner's half-made
    _delta_log folder as a non-empty location; that message is retried like a conflict."""
    from pipelines.lake.concurrency import is_conflict

    lost = Exception("[DELTA_CREATE_TABLE_WITH_NON_EMPTY_LOCATION] Cannot create table "
                     f"('`delta`.`{tmp_path}/quarantine`'). The associated location is not empty and also not a Delta table.")
    assert is_conflict(lost)
    assert not is_conflict(Exception("[PATH_NOT_FOUND] Path does not exist"))


def test_a_create_that_finds_no_table_is_retried_only_on_the_create_path(spark, tmp_path, monkeypatch):
    """The CI failure of 2026-12-06: the loser's CREATE saw the winner's _delta_log folder without
    a commit and Delta answered DELTA_TABLE_NOT_FOUND. The create path raises TableCreateRace
    (retried); the same error from anywhere else is not a conflict."""
    from delta.tables import DeltaTableBuilder

    from pipelines.lake import tables
    from pipelines.lake.concurrency import TableCreateRace, is_conflict
    from pipelines.config.settings import load_settings

    assert not is_conflict(Exception("[DELTA_TABLE_NOT_FOUND] Delta table `x` doesn't exist."))
    settings = load_settings(overrides={"tables_root": str(tmp_path / "lake")})
    spec = next(s for s in tables.OUTPUT_TABLES if s.name == "quarantine")
    real_execute, calls = DeltaTableBuilder.execute, []

    def first_call_loses(self):
        calls.append(1)
        if len(calls) == 1:
            raise Exception(f"[DELTA_TABLE_NOT_FOUND] Delta table `{Lake(spark, settings).path(spec.name)}` doesn't exist.")
        return real_execute(self)

    monkeypatch.setattr(DeltaTableBuilder, "execute", first_call_loses)
    with pytest.raises(TableCreateRace, match="quarantine"):
        tables.create_table(spark, Lake(spark, settings).path(spec.name), spec, None)
    path = Lake(spark, settings).ensure(spec, None)
    assert len(calls) == 2 and tables.table_exists(spark, path)
