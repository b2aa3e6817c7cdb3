"""``user_tokens``: each user's latest full token tuple and its collision suffix."""
from __future__ import annotations

import logging

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipelines import tables
from pipelines.day_run import DayRun, day_tuples
from pipelines.documents import latest_profiles

log = logging.getLogger(__name__)


IDENTITY_COLUMNS = ("as_of", "token_tuple", "sources_present", "engagement", "tokenizer_version", "run_id")


def update_identities(run: DayRun, day_tokens: DataFrame) -> int:
    """Upsert each active user's latest tuple into ``user_tokens`` and re-rank the suffix of every
    tuple group the day changed (groups users joined and groups they left): within a group of
    identical tuples the most engaged user keeps suffix 0, ties broken by user_id. Returns the
    number of users whose row changed (0 on a re-run)."""
    from delta.tables import DeltaTable
    from pyspark.sql import Window

    spark = run.spark
    path = tables.ensure_table(spark, run.settings, tables.USER_TOKENS, run.tokenizer.version)
    engagement = latest_profiles(run.read("user_profile"), run.event_date).select("user_id", "engagement")
    incoming = (day_tuples(run, day_tokens)
                .join(engagement, "user_id", "left")
                .select("user_id", F.to_date(F.lit(run.event_date)).alias("as_of"), "token_tuple", "sources_present",
                        F.coalesce("engagement", F.lit(0.0)).alias("engagement"),
                        F.lit(run.tokenizer.version).alias("tokenizer_version"), F.lit(run.run_id).alias("run_id")))
    current = DeltaTable.forPath(spark, path)
    old = current.toDF().select("user_id", *[F.col(c).alias(f"old_{c}") for c in ("as_of", "token_tuple", "engagement", "tokenizer_version")])
    # keep users that are new, or whose newer-or-same-day state differs (a backfilled older day never wins)
    changed = (incoming.join(old, "user_id", "left")
               .where(F.col("old_as_of").isNull()
                      | ((F.col("as_of") >= F.col("old_as_of"))
                         & ((F.col("as_of") != F.col("old_as_of")) | (F.col("token_tuple") != F.col("old_token_tuple"))
                            | (F.col("engagement") != F.col("old_engagement"))
                            | (F.col("tokenizer_version") != F.col("old_tokenizer_version")))))
               .localCheckpoint(eager=True))
    n_changed = changed.count()
    if n_changed == 0:
        log.info("identities: no user's tuple changed on %s: nothing to merge", run.event_date)
        return 0
    # groups touched: the tuples users move to and the ones they leave (read before the MERGE)
    touched = (changed.select("token_tuple")
               .unionByName(changed.where(F.col("old_token_tuple").isNotNull()).select(F.col("old_token_tuple").alias("token_tuple")))
               .distinct().localCheckpoint(eager=True))
    (current.alias("t")
        .merge(changed.select("user_id", *IDENTITY_COLUMNS).alias("s"), "t.user_id = s.user_id")
        .whenMatchedUpdate(set={c: f"s.{c}" for c in IDENTITY_COLUMNS})
        .whenNotMatchedInsert(values={"user_id": "s.user_id", **{c: f"s.{c}" for c in IDENTITY_COLUMNS}, "collision_suffix": "0"})
        .execute())

    members = DeltaTable.forPath(spark, path).toDF().join(touched, "token_tuple", "left_semi")
    rank = Window.partitionBy("token_tuple").orderBy(F.desc("engagement"), F.asc("user_id"))
    reranked = (members.select("user_id", "collision_suffix", (F.row_number().over(rank) - 1).alias("suffix"))
                .where(F.col("collision_suffix") != F.col("suffix"))
                .localCheckpoint(eager=True))
    if reranked.count():
        (DeltaTable.forPath(spark, path).alias("t")
            .merge(reranked.alias("r"), "t.user_id = r.user_id")
            .whenMatchedUpdate(set={"collision_suffix": "r.suffix"})
            .execute())
    return n_changed
