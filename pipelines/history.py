"""``user_token_history``: one row per (user, source) with its per-day token entries."""
from __future__ import annotations

import logging

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipelines import tables
from pipelines.day_run import DayRun

log = logging.getLogger(__name__)


def _history_merge_expressions(L: int) -> dict[str, str]:
    """SQL for the history MERGE: the stored (dates, tokens) as per-day entries, the date being
    written replaced (so re-runs never append twice) and the entries sorted by date (so a
    backfill lands where processing in order would have put it)."""
    entries = f"transform(t.dates, (d, i) -> named_struct('event_date', d, 'codes', slice(t.tokens, i * {L} + 1, {L})))"
    incoming = "named_struct('event_date', s.event_date, 'codes', s.codes)"
    merged = f"array_sort(concat(filter({entries}, e -> e.event_date != s.event_date), array({incoming})))"
    return {
        "unchanged": f"array_contains({entries}, {incoming})",
        "dates": f"transform({merged}, e -> e.event_date)",
        "tokens": f"flatten(transform({merged}, e -> e.codes))",
        "n_days": f"size({merged})",
        "last_date": f"array_max(transform({merged}, e -> e.event_date))",
    }


def merge_history(run: DayRun, day_tokens: DataFrame) -> int:
    """MERGE the day's tokens into ``user_token_history``; returns the rows that changed.

    Rows whose history already holds exactly (date, codes) are dropped before the MERGE, so a
    re-run matches nothing and writes nothing."""
    from delta.tables import DeltaTable

    L = run.tokenizer.num_levels
    path = tables.ensure_table(run.spark, run.settings, tables.USER_TOKEN_HISTORY, run.tokenizer.version)
    expr = _history_merge_expressions(L)
    target = DeltaTable.forPath(run.spark, path)
    changed = (day_tokens.alias("s")
               .join(target.toDF().alias("t"),
                     (F.col("s.user_id") == F.col("t.user_id")) & (F.col("s.source") == F.col("t.source")), "left")
               .where(F.col("t.user_id").isNull() | ~F.expr(expr["unchanged"]))
               .select("s.*")
               .localCheckpoint(eager=True))
    n_changed = changed.count()
    if n_changed == 0:
        log.info("history: every row already holds %s: nothing to merge", run.event_date)
        return 0
    (target.alias("t")
        .merge(changed.alias("s"), "t.user_id = s.user_id AND t.source = s.source")
        .whenMatchedUpdate(set={
            "dates": expr["dates"], "tokens": expr["tokens"], "n_days": expr["n_days"],
            "last_date": expr["last_date"], "tokenizer_version": "s.tokenizer_version",
            "updated_at": "current_timestamp()",
        })
        .whenNotMatchedInsert(values={
            "user_id": "s.user_id", "source": "s.source", "dates": "array(s.event_date)", "tokens": "s.codes",
            "tokens_per_day": str(L), "n_days": "1", "last_date": "s.event_date",
            "tokenizer_version": "s.tokenizer_version", "updated_at": "current_timestamp()",
        })
        .execute())
    return n_changed
