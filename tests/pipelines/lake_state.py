"""What a lake's tables hold, as plain sorted tuples, to compare a healed lake with an uninterrupted one."""
from __future__ import annotations

from pyspark.sql import functions as F

from pipelines.lake.views import read_view
from pipelines.lake import tables
from pipelines.lake.lake import Lake


def _rows(frame) -> list[tuple]:
    return sorted(tuple(tuple(v) if isinstance(v, list) else v for v in row) for row in frame.collect())


def lake_state(spark, settings, with_run_ids: bool = True) -> dict[str, list[tuple]]:
    """``user_day_tokens``, ``user_tokens``, the history view (without write times), what is still
    staged and which (date, step) pairs ``run_metrics`` records ``ok`` (run ids left out with
    ``with_run_ids=False``, for a re-run under new run ids)."""
    drop = [] if with_run_ids else ["run_id"]
    state = {name: _rows(Lake(spark, settings).read(name).drop(*drop))
             for name in ("user_day_tokens", "user_tokens")}
    state["user_token_history"] = _rows(read_view(Lake(spark, settings), "user_token_history").drop("updated_at"))
    state["staging_day_tokens"] = _rows(Lake(spark, settings).read("staging_day_tokens").drop(*drop))
    metrics = Lake(spark, settings).read("run_metrics").where(F.col("status") == "ok")
    state["recorded_ok"] = sorted({(str(r["event_date"]), r["step"]) for r in metrics.collect()
                                   if r["step"] in ("stage", "quality", "publish")})
    return state


def delta_versions(spark, settings) -> dict[str, int]:
    """The latest Delta version of every output table that exists."""
    from delta.tables import DeltaTable

    out = {}
    for spec in tables.OUTPUT_TABLES:
        path = Lake(spark, settings).path(spec.name)
        if tables.table_exists(spark, path):
            out[spec.name] = DeltaTable.forPath(spark, path).history(1).first()["version"]
    return out
