"""Step 3 of the night: make staged, gated dates visible, safely under any crash and either retry style.

Publish commits in a fixed order (:data:`pipelines.night.commit_points.PUBLISH_COMMITS`):

1. ``user_day_tokens``: the dates whose entries changed, in one ``replaceWhere`` (after removing
   the coverage of compacted history periods that hold them: ``user_day_tokens.uncover``);
2. ``user_tokens``: one MERGE with the identities the fact table now implies
   (:func:`pipelines.night.identities.update_identities`);
3. ``run_metrics``: ``publish ok`` for every date;
4. ``staging_day_tokens``: the published staged rows are deleted (``staging.keep_days``).

Every write is idempotent, and the staged rows are deleted only after the publish is recorded.
So a crash after 1 or 2 is healed by running publish again: the staged rows are still there.
After 3 and 4 the date is complete. What a date needs on a retry is decided from the tables:

* staged rows of the date -> they are published (again: nothing changes if already applied);
* none, and ``user_day_tokens`` holds rows written by this run, or ``run_metrics`` records this
  run's ``publish ok`` -> the date is already published: a retry of the publish task alone (as
  Airflow does after a crash) succeeds without writing;
* none, and this run's own stage recorded 0 token rows -> the date is published empty (every
  row of it was removed upstream: a correction);
* none otherwise -> refused (:class:`StagingCleared`): a date is never replaced by nothing
  because its staged rows were cleared.

A re-run of the whole date stages it again, so it takes the first path.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import date, timedelta

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipelines.night import commit_points

from pipelines.lake import tables
from pipelines.lake.concurrency import publish_lock, retry_on_conflict
from pipelines.night.day_run import DayRun, StepRecord, dates_predicate, record_failure, record_steps
from pipelines.night.history_publish import publish_day_tokens
from pipelines.night.identities import update_identities
from pipelines.errors import StagingCleared

log = logging.getLogger(__name__)


def publish(run: DayRun) -> dict:
    """Make the staged (and gated) day visible: fact table, history, identities
    (:func:`publish_dates` of one date)."""
    return publish_dates([run])[run.event_date]


def publish_dates(runs: list[DayRun]) -> dict[str, dict]:
    """Make the staged (and gated) dates of ``runs`` visible, as publishing them one by one in
    date order would, in the same commits as one date (module docstring). Returns
    ``{event_date: metrics}``; a date found already published by its run gets
    ``already_published: True`` and is not written again.

    One publish at a time per ``tables_root`` (:func:`publish_lock`); a write that meets a Delta
    conflict is retried whole with backoff."""
    started = time.monotonic()
    runs = sorted(runs, key=lambda r: r.event_date)
    limits = runs[0].settings.concurrency
    what = f"publish {runs[0].event_date}" + (f"..{runs[-1].event_date} ({len(runs)} dates)" if len(runs) > 1 else "")
    try:
        with publish_lock(runs[0].settings.tables_root, limits.lock_timeout_s):
            metrics, staged_rows = retry_on_conflict(lambda: _publish_writes(runs), what, limits.conflict_retries,
                                                     limits.retry_base_s)
            clearing = staging_to_clear(runs, staged_rows)
            for d, rows in clearing.rows_per_date.items():
                metrics[d]["staging_rows_cleared"] = rows
            seconds = (time.monotonic() - started) / len(runs)   # the writes are shared: each date gets its share
            record_steps([StepRecord(r, "publish", "ok", seconds, metrics[r.event_date]) for r in runs])
            commit_points.reached("run_metrics")
            retry_on_conflict(lambda: clearing.apply(runs[0]), f"clear staging of {what}",
                              limits.conflict_retries, limits.retry_base_s)
            commit_points.reached("staging_day_tokens")
    except Exception as exc:
        record_failure(runs, "publish", started, exc)
        raise
    for r in runs:
        log.info("published %s: %d token rows%s", r.event_date, metrics[r.event_date]["token_rows"],
                 " (already published by this run: nothing written)" if metrics[r.event_date].get("already_published") else "")
    return metrics


def _publish_writes(runs: list[DayRun]) -> tuple[dict[str, dict], dict[str, int]]:
    """Commits 1 and 2 for the dates that need them. Returns the metrics of every date and the
    rows staged per date (dates with none left out)."""
    run, dates = runs[0], [r.event_date for r in runs]
    staged = run.read(tables.STAGING_DAY_TOKENS.name).where(dates_predicate(dates)).localCheckpoint(eager=True)
    counts = {str(r["event_date"]): r for r in staged.groupBy("event_date").agg(
        F.count(F.lit(1)).alias("rows"),
        F.collect_set(F.when(F.col("tokenizer_version") != run.tokenizer.version, F.col("tokenizer_version"))).alias("foreign"),
        F.count_if(F.col("codes").isNotNull()).alias("token_rows")).collect()}
    mismatched = {d: sorted(c["foreign"]) for d, c in counts.items() if c["foreign"]}
    if mismatched:
        raise tables.TokenizerVersionMismatch(
            "staging_day_tokens for " + "; ".join(f"{d} holds codes of tokenizer {', '.join(v)}" for d, v in mismatched.items())
            + f", this run publishes tokenizer {run.tokenizer.version}: re-run the stage step with it")
    done = already_published([r for r in runs if r.event_date not in counts])
    todo = [r for r in runs if r.event_date not in done]
    metrics = dict(done)
    if todo:
        day_tokens: DataFrame = staged.where(F.col("codes").isNotNull())
        t0 = time.monotonic()
        changed = publish_day_tokens(todo, day_tokens)
        t1 = time.monotonic()
        identities = update_identities(todo, day_tokens)
        commit_points.reached("user_tokens")
        t2 = time.monotonic()
        for r in todo:
            d = r.event_date
            metrics[d] = {"token_rows": int(counts[d]["token_rows"]) if d in counts else 0,
                          "history_rows_changed": changed[d], "identities_changed": identities[d],
                          "staging_rows_cleared": 0, "user_day_tokens_seconds": t1 - t0, "user_tokens_seconds": t2 - t1}
    return metrics, {d: int(c["rows"]) for d, c in counts.items()}


def already_published(unstaged: list[DayRun]) -> dict[str, dict]:
    """For the runs whose date has no staged rows: ``{date: metrics}`` of those this run already
    published (``user_day_tokens`` holds rows of its run id, or ``run_metrics`` its ``publish
    ok``). A date whose stage in this run recorded 0 token rows is left out (it is published
    empty); any other date is refused with :class:`StagingCleared`."""
    if not unstaged:
        return {}
    run = unstaged[0]
    dates = [r.event_date for r in unstaged]
    run_of = F.create_map(*[c for r in unstaged for c in (F.lit(date.fromisoformat(r.event_date)), F.lit(r.run_id))])
    fact_rows: dict[str, int] = {}
    if tables.table_exists(run.spark, run.path(tables.USER_DAY_TOKENS.name)):
        fact_rows = {str(r["event_date"]): int(r["count"]) for r in run.read(tables.USER_DAY_TOKENS.name)
                     .where(dates_predicate(dates)).where(F.col("run_id") == run_of[F.col("event_date")])
                     .groupBy("event_date").count().collect()}
    recorded: dict[tuple[str, str], int | None] = {}
    if tables.table_exists(run.spark, run.path(tables.RUN_METRICS.name)):
        rows = (run.read(tables.RUN_METRICS.name).where(dates_predicate(dates))
                .where((F.col("run_id") == run_of[F.col("event_date")]) & (F.col("status") == "ok")
                       & F.col("step").isin("stage", "publish"))
                .select("event_date", "step", "token_rows", "recorded_at").orderBy("recorded_at").collect())
        recorded = {(str(r["event_date"]), r["step"]): r["token_rows"] for r in rows}   # the latest wins
    done, refused = {}, []
    for d in dates:
        if d in fact_rows or (d, "publish") in recorded:
            done[d] = {"token_rows": fact_rows.get(d, recorded.get((d, "publish")) or 0), "history_rows_changed": 0,
                       "identities_changed": 0, "staging_rows_cleared": 0, "already_published": True}
        elif recorded.get((d, "stage"), -1) != 0:
            refused.append(d)
    if refused:
        raise StagingCleared(
            f"staging_day_tokens holds nothing for {', '.join(refused)} and this run ({', '.join(r.run_id for r in unstaged if r.event_date in refused)}) "
            "neither published it nor staged it empty: its staged rows were cleared or never written. "
            "Re-run the stage step (or the whole date) before publishing it")
    if done:
        log.info("publish: %s already published by this run (found in the tables): nothing to write", ", ".join(done))
    return done


@dataclass(frozen=True)
class StagingClearing:
    """The staged rows publish deletes after recording itself (commit 4)."""

    dates: tuple[date, ...]              # staged date partitions to delete
    rows_per_date: dict[str, int]        # rows deleted, counted on the dates of the batch

    def apply(self, run: DayRun) -> None:
        from delta.tables import DeltaTable

        if not self.dates:
            return
        DeltaTable.forPath(run.spark, run.path(tables.STAGING_DAY_TOKENS.name)).delete(F.col("event_date").isin(list(self.dates)))
        log.info("staging_day_tokens: %d rows of published date(s) %s deleted (keep_days=%d)",
                 sum(self.rows_per_date.values()), [d.isoformat() for d in self.dates], run.settings.staging.keep_days)


def staging_to_clear(runs: list[DayRun], staged_rows: dict[str, int]) -> StagingClearing:
    """The staged rows of published dates at least ``staging.keep_days`` days older than the newest
    date of ``runs`` (``keep_days: 0``, the default: the dates themselves). Rows are counted per
    date of ``runs`` as publishing them one by one would have counted them (a date's rows go to
    the first published date at least ``keep_days`` later). Dates staged but not yet published (a
    backfill running beside this one) are never touched.

    ``staged_rows``: the rows publish found staged per date of ``runs``; only older dates
    (``keep_days`` > 0) are counted here, with one read of ``staging_day_tokens``."""
    run = runs[0]
    keep = run.settings.staging.keep_days
    batch = sorted(date.fromisoformat(r.event_date) for r in runs)
    published = set(batch)
    if keep and tables.table_exists(run.spark, run.path(tables.RUN_METRICS.name)):
        published |= {r["event_date"] for r in run.read(tables.RUN_METRICS.name)
                      .where("step = 'publish' AND status = 'ok'").select("event_date").distinct().collect()}
    dates = sorted(d for d in published if d <= batch[-1] - timedelta(days=keep))
    staged = {d: staged_rows[d.isoformat()] for d in dates if staged_rows.get(d.isoformat())}
    older = [d for d in dates if d not in batch]
    if older and tables.table_exists(run.spark, run.path(tables.STAGING_DAY_TOKENS.name)):
        staged |= {r["event_date"]: int(r["count"]) for r in run.read(tables.STAGING_DAY_TOKENS.name)
                   .where(F.col("event_date").isin(older)).groupBy("event_date").count().collect()}
    if not staged:
        return StagingClearing((), {})
    counted: dict[str, int] = {}
    for day, rows in staged.items():
        owner = next(b for b in batch if b >= day + timedelta(days=keep))
        counted[owner.isoformat()] = counted.get(owner.isoformat(), 0) + rows
    return StagingClearing(tuple(sorted(staged)), counted)
