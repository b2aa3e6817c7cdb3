"""``user_tokens``: each user's latest full token tuple and its collision suffix.

Every change to ``user_tokens`` (a night's new tuples, an erasure) is ONE Delta commit computed
by :func:`commit_identities`: the rows that change, the rows that leave, and the re-ranked
suffix of every member of every tuple group they touch. There is no state in between (tuples
merged but suffixes not yet re-ranked) that a crash or a conflict could leave behind, and a
re-run of a date re-ranks the groups the day's users belong to again, so groups damaged by an
older run (suffixes not dense, two users on one suffix) heal when one of their members is next
active. Suffix = rank by engagement descending, ties by user_id (``u2qt_core.collisions`` is the
numpy reference).

Cost per night: the day's active users' rows are found by a semi-join on ``user_id`` and the
touched groups' members by a semi-join on ``token_tuple``; windows and the MERGE only ever see
those rows (O(active users + members of their groups)), never the whole table. A backfill applies
all its dates in the same one commit (:func:`update_identities` says why that equals the dates
one by one).
"""
from __future__ import annotations

import logging
from datetime import date

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from pipelines.lake import tables
from pipelines.night.day_run import DayRun, day_tuples
from pipelines.night.documents import profiles_as_of

log = logging.getLogger(__name__)


IDENTITY_COLUMNS = ("as_of", "token_tuple", "sources_present", "engagement", "tokenizer_version", "run_id")
_FULL, _SUFFIX, _DELETE = "full", "suffix", "delete"


def update_identities(runs: list[DayRun], day_tokens: DataFrame) -> dict[str, int]:
    """Apply the active users' tuples of the dates of ``runs`` (``day_tokens`` holds their rows) to
    ``user_tokens`` in ONE commit, with the result of applying the dates one by one in date order.
    Returns per date the number of users whose tuple row that date changed (0 on a re-run).

    One date: each active user's tuple is upserted when it is new or its newer-or-same-day state
    differs (a backfilled older day never wins), and every group the day touches is re-ranked
    (the groups users join, leave, and every active user is in now).

    Many dates, in one pass (why it equals the dates one by one, oldest first):

    * a user's row of date d wins against the row before d iff it wins against the row before
      the batch: the previous row is either that one or the user's row of an earlier batch date
      that won, and then d (later) wins too, as it does against the older pre-batch row;
    * so the final row of a user is the latest row that wins, and the groups re-ranked over the
      sequence are the pre-batch groups of the batch's active users plus the groups of every
      winning row: exactly what is passed as ``touched``;
    * a group's members and their engagement change only through a winning row of a member, which
      touches the group again, so the last re-rank of each touched group ranks its final
      members: the one re-rank over the final members gives the same suffixes; untouched groups
      are never changed either way."""
    from delta.tables import DeltaTable

    run = runs[0]
    spark = run.spark
    path = run.lake.ensure(tables.USER_TOKENS, run.tokenizer.version)
    run_ids = F.create_map(*[c for r in runs for c in (F.lit(date.fromisoformat(r.event_date)), F.lit(r.run_id))])
    tuples = day_tuples(run, day_tokens)
    incoming = _identity_rows(run, tuples, run_ids[F.col("event_date")], F.lit(run.tokenizer.version))
    current = DeltaTable.forPath(spark, path).toDF()
    old = (current.join(tuples.select("user_id"), "user_id", "left_semi")
           .select("user_id", *[F.col(c).alias(f"old_{c}") for c in ("as_of", "token_tuple", "engagement", "tokenizer_version")]))
    # rows that are new, or whose newer-or-same-day state differs from the row before the batch
    joined = incoming.join(old, "user_id", "left").localCheckpoint(eager=True)
    wins = (F.col("old_as_of").isNull()
            | ((F.col("as_of") >= F.col("old_as_of"))
               & ((F.col("as_of") != F.col("old_as_of")) | (F.col("token_tuple") != F.col("old_token_tuple"))
                  | (F.col("engagement") != F.col("old_engagement"))
                  | (F.col("tokenizer_version") != F.col("old_tokenizer_version")))))
    winning = joined.where(wins)
    newest = Window.partitionBy("user_id").orderBy(F.desc("as_of"))
    changed = (winning.withColumn("_newest", F.row_number().over(newest)).where("_newest = 1")
               .select("user_id", *IDENTITY_COLUMNS))
    # every group an active user was in before the batch and every group a winning row joins
    touched = (joined.where(F.col("old_token_tuple").isNotNull()).select(F.col("old_token_tuple").alias("token_tuple"))
               .unionByName(winning.select("token_tuple")))
    found = {str(r["as_of"]): int(r["count"]) for r in winning.groupBy("as_of").count().collect()}
    per_date = {r.event_date: found.get(r.event_date, 0) for r in runs}
    correction = _corrected_identities(run, current, joined, [r.event_date for r in runs])
    removed = None
    if correction is not None:
        fallback, removed, stale = correction
        changed = changed.unionByName(fallback)
        touched = touched.unionByName(stale.select("token_tuple")).unionByName(fallback.select("token_tuple"))
        for r in stale.groupBy("as_of").count().collect():   # counted on the date that took their rows away
            per_date[str(r["as_of"])] += int(r["count"])
    rewritten = commit_identities(spark, path, upserts=changed, removed=removed, touched=touched)
    log.info("identities %s: %s users changed, %d rows written (tuples + re-ranked suffixes)",
             ", ".join(per_date), sum(per_date.values()), rewritten)
    return per_date


def _identity_rows(run: DayRun, tuples: DataFrame, run_id: Column, tokenizer_version: Column) -> DataFrame:
    """``(user_id, *IDENTITY_COLUMNS)`` of :func:`day_tuples` rows: ``as_of`` the date, the
    engagement of the user's profile as of that date (:func:`ranking_engagement`)."""
    engagement = (profiles_as_of(run.read("user_profile"), tuples.select("user_id", "event_date"))
                  .select("user_id", "event_date", "engagement"))
    return (tuples.join(engagement, ["user_id", "event_date"], "left")
            .select("user_id", F.col("event_date").alias("as_of"), "token_tuple", "sources_present",
                    ranking_engagement(F.col("engagement")).alias("engagement"),
                    tokenizer_version.alias("tokenizer_version"), run_id.alias("run_id")))


def _corrected_identities(run: DayRun, current: DataFrame, incoming: DataFrame,
                          dates: list[str]) -> tuple[DataFrame, DataFrame, DataFrame] | None:
    """The users a re-published date took away: their ``user_tokens`` row names one of ``dates``
    (already replaced in ``user_day_tokens``) but no incoming row is on or after it. Each gets the
    identity ``user_day_tokens`` now implies: the tuple of its latest remaining date (with that
    date's run id and version), or no row when none remains. ``incoming``: the batch's identity
    rows (``user_id``, ``as_of``, ...), checkpointed by the caller, so that the check does not
    compute them again (the day's tuples and engagement: 11 Spark jobs of the tiny world's
    publish, 4 with the checkpoint).

    Returns ``(fallback identity rows, removed user ids, the affected users' old (user_id, as_of,
    token_tuple))``, or None when no user is affected: the usual night pays one filtered scan of
    ``user_tokens`` (as the re-rank's semi-joins do); only a correction reads the affected users'
    rows of ``user_day_tokens`` (a scan of the fact table filtered by their ids: O(history rows),
    on correction nights only)."""
    in_batch = F.col("as_of").isin([F.lit(date.fromisoformat(d)) for d in dates])
    later = incoming.select(F.col("user_id").alias("later_user"), F.col("as_of").alias("later_as_of"))
    stale = (current.where(in_batch).select("user_id", "as_of", "token_tuple")
             .join(later, (F.col("user_id") == F.col("later_user")) & (F.col("later_as_of") >= F.col("as_of")), "left_anti")
             .localCheckpoint(eager=True))
    if stale.isEmpty():
        return None
    facts = run.read(tables.USER_DAY_TOKENS.name).join(stale.select("user_id"), "user_id", "left_semi")
    latest = facts.groupBy("user_id").agg(F.max("event_date").alias("event_date"))
    rows = facts.join(latest, ["user_id", "event_date"], "left_semi").localCheckpoint(eager=True)
    written = rows.groupBy("user_id", "event_date").agg(F.max("run_id").alias("run_id"),
                                                       F.max("tokenizer_version").alias("tokenizer_version"))
    tuples = day_tuples(run, rows).join(written, ["user_id", "event_date"])
    fallback = _identity_rows(run, tuples, F.col("run_id"), F.col("tokenizer_version"))
    removed = stale.select("user_id").join(fallback.select("user_id"), "user_id", "left_anti")
    log.info("identities: %d user(s) lost their rows of %s in the re-published date(s): identities taken from "
             "their latest remaining date, or removed", stale.count(), ", ".join(dates))
    return fallback, removed, stale


def ranking_engagement(engagement: Column) -> Column:
    """The engagement a user is ranked by: a null, NaN or infinite value (no profile, or a bad
    one) ranks as 0.0, the lowest, instead of NaN sorting above every number in Spark."""
    finite = engagement.isNotNull() & ~F.isnan(engagement) & (F.abs(engagement) != F.lit(float("inf")))
    return F.when(finite, engagement.cast("double")).otherwise(F.lit(0.0))


def commit_identities(spark: SparkSession, path: str, upserts: DataFrame | None, removed: DataFrame | None,
                      touched: DataFrame) -> int:
    """Apply new identity rows and removals to ``user_tokens`` at ``path`` together with the
    re-ranked suffixes of every member of the ``touched`` groups, as one MERGE (one commit).

    ``upserts``: ``(user_id, *IDENTITY_COLUMNS)`` rows that replace (or insert) a user's row;
    ``removed``: ``(user_id)`` rows to delete; ``touched``: ``(token_tuple)`` of the groups to
    re-rank (must include the groups the upserted and removed users leave and join). Only rows
    whose content or suffix changes are written. Returns the number of rows written.
    """
    from delta.tables import DeltaTable

    checkpointed = identity_changes(spark, path, upserts, removed, touched).localCheckpoint(eager=True)
    source = checkpointed.toDF(*checkpointed.columns)   # fresh column ids: the source is derived from the target
    rows = source.count()
    if rows == 0:
        return 0
    (DeltaTable.forPath(spark, path).alias("t")
        .merge(source.alias("s"), "t.user_id = s.user_id")
        .whenMatchedDelete(condition=f"s._kind = '{_DELETE}'")
        .whenMatchedUpdate(condition=f"s._kind = '{_FULL}'",
                           set={**{c: f"s.{c}" for c in IDENTITY_COLUMNS}, "collision_suffix": "s._suffix"})
        .whenMatchedUpdate(condition=f"s._kind = '{_SUFFIX}'", set={"collision_suffix": "s._suffix"})
        .whenNotMatchedInsert(condition=f"s._kind = '{_FULL}'",
                              values={"user_id": "s.user_id", **{c: f"s.{c}" for c in IDENTITY_COLUMNS},
                                      "collision_suffix": "s._suffix"})
        .execute())
    return rows


def identity_changes(spark: SparkSession, path: str, upserts: DataFrame | None, removed: DataFrame | None,
                     touched: DataFrame) -> DataFrame:
    """The MERGE source of :func:`commit_identities` (lazy): ``(user_id, *IDENTITY_COLUMNS, _kind,
    _suffix)`` with ``_kind`` = full (new row), suffix (re-ranked member) or delete.

    ``user_tokens`` is only read through semi-joins with ``touched`` (and ``removed``), so the
    window ranks the touched groups' members only."""
    from delta.tables import DeltaTable

    current = DeltaTable.forPath(spark, path).toDF()
    leaving = [frame.select("user_id") for frame in (upserts, removed) if frame is not None]
    groups = touched.select("token_tuple").distinct()
    members = current.join(groups, "token_tuple", "left_semi")
    for frame in leaving:
        members = members.join(frame, "user_id", "left_anti")
    members = members.select("user_id", *IDENTITY_COLUMNS, "collision_suffix", F.lit(_SUFFIX).alias("_kind"))
    if upserts is not None:
        members = members.unionByName(upserts.select(
            "user_id", *IDENTITY_COLUMNS, F.lit(None).cast("int").alias("collision_suffix"), F.lit(_FULL).alias("_kind")))
    rank = Window.partitionBy("token_tuple").orderBy(F.desc("engagement"), F.asc("user_id"))
    ranked = (members.withColumn("_suffix", (F.row_number().over(rank) - 1).cast("int"))
              .where((F.col("_kind") == _FULL) | (F.col("collision_suffix") != F.col("_suffix")))
              .drop("collision_suffix"))
    if removed is not None:
        ranked = ranked.unionByName(
            removed.select("user_id").distinct().join(current.select("user_id"), "user_id", "left_semi")
            .select("user_id", *[F.lit(None).cast(current.schema[c].dataType).alias(c) for c in IDENTITY_COLUMNS],
                    F.lit(_DELETE).alias("_kind"), F.lit(None).cast("int").alias("_suffix")))
    return ranked


def forget_identities(spark: SparkSession, path: str, user_ids: DataFrame) -> int:
    """Delete ``user_ids`` (a ``user_id`` column) from ``user_tokens`` and re-rank the groups they
    leave, in one commit. Returns the number of rows written (deleted + re-ranked)."""
    from delta.tables import DeltaTable

    current = DeltaTable.forPath(spark, path).toDF()
    touched = current.join(user_ids.select("user_id"), "user_id", "left_semi").select("token_tuple")
    return commit_identities(spark, path, upserts=None, removed=user_ids, touched=touched)
