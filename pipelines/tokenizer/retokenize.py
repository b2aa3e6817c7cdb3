"""``u2qt retokenize --version V --from D1 --to D2``: a new table generation tokenized with V.

1. the dates are tokenized with V into generation ``V`` (``<tables_root>/_generations/V/``) as
   one backfill job (:func:`pipelines.night.backfill.backfill`: one inference pass, then gates and
   publish per date), invisible to analysts meanwhile;
2. the generation is checked complete: every date of the range with ``raw_events`` has its rows
   in the new ``user_day_tokens``, all of version V;
3. the pointer switches to it in one Delta commit (:meth:`pipelines.lake.lake.Lake.switch`): the
   views (:func:`pipelines.lake.views.register_views`) and the catalog
   (:func:`pipelines.lake.catalog.register_catalog`) read the pointer, so they move together.

The old generation's tables stay where they were, readable by path, until removed by hand. A
failing gate stops before the switch; re-running the command resumes (every step is idempotent).
"""
from __future__ import annotations

import logging
import time

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipelines.dates import date_range
from pipelines.tokenizer import registry

from pipelines.lake import tables
from pipelines.lake.lake import Lake
from pipelines.night.backfill import backfill
from pipelines.config.settings import PipelineSettings
from u2qt_core.errors import U2QTError
from pipelines.errors import IncompleteGeneration

log = logging.getLogger(__name__)


def retokenize(spark: SparkSession, settings: PipelineSettings, tokenizer_version: str, start: str, end: str) -> dict:
    """Tokenize ``start``..``end`` with ``tokenizer_version`` into its own generation and switch to it."""
    started = time.monotonic()
    registry.find(settings, tokenizer_version)   # one line when it is not registered
    dates = date_range(start, end)
    lake = Lake(spark, settings)
    now = lake.current()
    if now.tokenizer_version == tokenizer_version:
        raise U2QTError(f"table generation {now.generation!r} is current and holds {tokenizer_version} already")
    results = backfill(spark, settings, dates, run_prefix=f"retokenize_{tokenizer_version}",
                       tokenizer_version=tokenizer_version, generation=tokenizer_version)
    published = [d for d, r in results.items() if r["status"] == "ok"]
    _check_complete(lake.at(tokenizer_version), tokenizer_version, published)
    lake.switch(tokenizer_version, tokenizer_version, (start, end))
    log.info("retokenize: %d date(s) with %s, generation switched from %r in %.0f s", len(published),
             tokenizer_version, now.generation, time.monotonic() - started)
    return {"generation": tokenizer_version, "previous": now.generation, "previous_version": now.tokenizer_version,
            "dates": {d: r["status"] for d, r in results.items()}}


def _check_complete(target: Lake, version: str, published: list[str]) -> None:
    days = target.read(tables.USER_DAY_TOKENS.name)
    found = {str(r["event_date"]): r["versions"] for r in days.groupBy("event_date")
             .agg(F.collect_set("tokenizer_version").alias("versions")).collect()}
    missing = [d for d in published if d not in found]
    if missing:
        raise IncompleteGeneration(f"generation {version}: user_day_tokens has no rows for {missing}; not switched")
    foreign = {d: v for d, v in found.items() if v != [version]}
    if foreign:
        raise IncompleteGeneration(f"generation {version}: dates {sorted(foreign)} hold other versions {foreign}; not switched")
