"""The views over the lake's tables: ``user_token_history`` (:mod:`pipelines.lake.history`),
``user_day_token_strings`` and ``user_identity``, as one session's temp views
(:func:`register_views`, what ``u2qt sql`` reads) or as the SELECTs the persistent catalog
(:mod:`pipelines.lake.catalog`) creates views from. The token format of the token-string view is
the caller's (:func:`pipelines.night.day_run.analyst_lake` resolves it with the current generation)."""
from __future__ import annotations

import logging

from pyspark.sql import DataFrame

from pipelines.lake.history import read_history
from pipelines.lake.lake import Lake
from pipelines.lake.tables import ALL_TABLES, USER_TOKEN_HISTORY
from u2qt_core.token_strings import TokenFormat, sql_collision_token

log = logging.getLogger(__name__)


def read_view(lake: Lake, name: str) -> DataFrame:
    """A table of ``lake`` or the ``user_token_history`` view, by name."""
    if name == USER_TOKEN_HISTORY.name:
        return read_history(lake)
    return lake.read(name)


def view_definitions(token_format: TokenFormat | None, table=lambda name: name) -> dict[str, tuple[str, str]]:
    """The analyst views: ``{view: (table it reads, SELECT ...)}``; ``table(name)`` qualifies the
    table names (``u2qt.user_day_tokens`` for the persistent catalog, bare for temp views).

    ``user_day_token_strings`` renders each code as ``<s1_0412>`` (shared level 1) or
    ``<bill3_0087>`` (source bill, level 3) with the SQL expression generated from
    :mod:`u2qt_core.token_strings` for the tokenizer's ``token_format`` (wide codes and union
    offsets included; a code that format refuses reads NULL; None: the view is left out).
    ``user_identity`` adds the ``<c_3>`` collision token.
    """
    views = {}
    if token_format is not None:
        views["user_day_token_strings"] = ("user_day_tokens", f"""
            SELECT user_id, event_date, source, codes, {token_format.sql("codes", "source")} AS token_strings,
                   tokenizer_version
            FROM {table("user_day_tokens")}
        """)
    views["user_identity"] = ("user_tokens", f"""
            SELECT user_id, as_of, token_tuple, collision_suffix,
                   {sql_collision_token("collision_suffix")} AS collision_token,
                   tokenizer_version
            FROM {table("user_tokens")}
        """)
    return views


def register_views(lake: Lake, token_format: TokenFormat | None = None) -> list[str]:
    """Expose every existing table of ``lake`` as a temp view of the same name, plus the analyst
    views (:func:`view_definitions`); the persistent catalog is :mod:`pipelines.lake.catalog`."""
    spark, registered = lake.spark, []
    for spec in ALL_TABLES:
        if lake.exists(spec.name):
            lake.read(spec.name).createOrReplaceTempView(spec.name)
            registered.append(spec.name)
    if "user_day_tokens" in registered:   # the history view (pipelines/lake/history.py), built from the tables
        read_history(lake).createOrReplaceTempView(USER_TOKEN_HISTORY.name)
        registered.append(USER_TOKEN_HISTORY.name)
    for view, (source_table, select) in view_definitions(token_format).items():
        if source_table in registered:
            spark.sql(f"CREATE OR REPLACE TEMP VIEW {view} AS {select}")
            registered.append(view)
    return registered
