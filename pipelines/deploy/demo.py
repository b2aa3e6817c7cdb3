"""``make demo`` / ``u2qt demo``: the whole stack and the tokenizer's life cycle end to end.

world -> train v1 -> evaluate -> promote -> one ``u2qt_daily`` DAG run per date -> Spark SQL;
then a second training (another seed) -> evaluate -> promote -> ``retokenize`` of every date
into a new table generation, switched atomically -> both generations queried in Spark SQL; with
the world's ``vocabulary_shift``, one more night on which the world has moved (drift flagged) and
the ``u2qt_retrain`` run that its mark schedules; the report page of the nights last.
A version that fails a gate is promoted with ``--force`` (recorded on the version) so the demo
runs through on its small world; the gates are printed either way.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Callable

from pipelines.config.settings import PipelineSettings

log = logging.getLogger("u2qt.demo")

DEMO_QUERY = """
SELECT h.user_id, h.source, h.n_days, h.dates, h.tokens, s.token_strings AS last_day_tokens,
       i.collision_suffix
FROM user_token_history h
JOIN user_day_token_strings s ON s.user_id = h.user_id AND s.source = h.source AND s.event_date = h.last_date
JOIN user_identity i ON i.user_id = h.user_id
ORDER BY h.user_id, h.source
"""


def _gated_promotion(spark, settings: PipelineSettings, version: str, echo: Callable[[str], None]) -> dict:
    from pipelines.tokenizer import registry
    from pipelines.tokenizer.promotion_gates import evaluate

    result = evaluate(spark, settings, version)
    echo(f"\nEvaluation gates of {version} on {result['heldout_dates']}:")
    for name, gate in result["gates"].items():
        echo(f"  {name:<22} {gate['value']!s:<22} {gate['rule']:<12} {'pass' if gate['passed'] else 'FAIL'}"
             + (f"  ({gate['skipped']})" if gate.get("skipped") else ""))
    try:
        registry.promote(settings, version)
    except registry.PromotionRefused as exc:
        echo(f"  promote refused, a gate failed: {exc}\n  -> demo promotes it with --force (recorded on the version)")
        registry.promote(settings, version, force=True, reason=f"make demo: {exc}")
    return result


def _a_night_after_the_world_moved(spark, settings: PipelineSettings, world_cfg, run_dates: Callable[[list[str]], None],
                                   register: Callable[[object, PipelineSettings], list[str]],
                                   echo: Callable[[str], None]) -> list[str]:
    """One more night, the world's next day, on which ``vocabulary_shift`` moves some sources to a
    new product line: the drift check flags them, alerts and marks the champion due for retraining
    (the night still publishes). Returns the new date."""
    from pipelines.world import write_next_days

    shift = world_cfg.vocabulary_shift
    moved = write_next_days(spark, world_cfg, settings.tables_root)
    echo(f"\nNight {moved[0]}: from {shift.from_date} {int(100 * shift.share)} % of the events of {shift.sources} speak of a "
         "new product line the tokenizer never saw:")
    run_dates(moved)
    register(spark, settings)
    spark.sql(f"SELECT source, level, round(psi, 3) AS psi, round(psi_noise, 3) AS psi_noise, round(js, 3) AS js, round(residual_mean, 3) AS residual_mean, "
              f"drift_status FROM token_quality WHERE event_date = DATE'{moved[0]}' AND level = 1 ORDER BY psi DESC").show(truncate=False)
    spark.sql(f"SELECT step, status, tokenizer_version FROM run_metrics WHERE event_date = DATE'{moved[0]}' "
              "AND step = 'drift'").show(truncate=False)
    echo("A failing drift threshold marks the version due for retraining (registry tag); under a scheduler the night's "
         "retrain_if_due task then emits the Asset u2qt_tokenizer_retrain_due and u2qt_retrain runs.")
    return moved


def _the_retraining_it_caused(spark, settings: PipelineSettings, night: str, run_retrain: Callable[[str], None],
                              echo: Callable[[str], None]) -> None:
    """What the Asset the moved night emitted schedules: one ``u2qt_retrain`` run (train ->
    evaluate -> promote past the gates); a gate that fails stops it at promote, as in production."""
    from pipelines import steps
    from pipelines.errors import DagRunFailed

    due = steps.launch("retrain-due", settings, [night], None, spark=spark)
    if not (due["retrain_due"] and due["first"]):
        echo(f"\nNight {night} did not newly mark {due['tokenizer_version']} due: no retraining ({due})")
        return
    echo(f"\nNight {night} first marked {due['tokenizer_version']} due: its retrain_if_due task emitted the Asset "
         "u2qt_tokenizer_retrain_due, on which u2qt_retrain is scheduled; running that DAG:")
    try:
        run_retrain(night)
        echo("u2qt_retrain: trained, evaluated and promoted a new version (analysts see its codes after retokenize)")
    except DagRunFailed as exc:
        echo(f"u2qt_retrain: {exc} -- the new version stays registered, not promoted (its gates are on it)")


def run_demo(spark, settings: PipelineSettings, world_cfg, run_dates: Callable[[list[str]], None],
             register: Callable[[object, PipelineSettings], list[str]], echo: Callable[[str], None],
             run_retrain: Callable[[str], None] | None = None) -> dict:
    """The demo; ``run_dates`` runs the u2qt_daily DAG per date, ``register`` the temp views,
    ``run_retrain`` the u2qt_retrain DAG for a date (None: the moved night's retraining is not run)."""
    from pipelines.lake.lake import Lake
    from pipelines.tokenizer.retokenize import retokenize
    from pipelines.tokenizer.train_job import train as train_tokenizer
    from pipelines.world import write_world

    started = time.monotonic()
    summary = write_world(spark, world_cfg, settings.tables_root)
    log.info("demo: world written: %s", summary)
    dates = [d.isoformat() for d in world_cfg.history_dates()]
    first = train_tokenizer(spark, settings)
    v1 = first["tokenizer_version"]
    gates = {v1: _gated_promotion(spark, settings, v1, echo)["gates"]}
    run_dates(dates)
    register(spark, settings)
    echo("\nToken history (Spark SQL over the Delta tables):")
    spark.sql(DEMO_QUERY).show(12, truncate=False)
    spark.sql("SELECT event_date, step, status, tokenizer_version, active_users, token_rows, quarantined_rows, "
              "round(collision_rate, 4) AS collision_rate, round(seconds, 1) AS seconds "
              "FROM run_metrics ORDER BY recorded_at").show(30, truncate=False)

    second = train_tokenizer(spark, settings, preset_overrides={"train": {"seed": 1}})
    v2 = second["tokenizer_version"]
    gates[v2] = _gated_promotion(spark, settings, v2, echo)["gates"]
    old = Lake(spark, settings).current()
    moved = retokenize(spark, settings, v2, dates[0], dates[-1])
    echo(f"\nRe-tokenized {dates[0]}..{dates[-1]} with {v2}: generation {moved['generation']!r} is current; "
         f"generation {old.generation!r} ({old.tokenizer_version}) stays readable")
    register(spark, settings)
    old_days = Lake(spark, settings, old.generation).path("user_day_tokens")
    echo("Both generations in Spark SQL (the views read the current one; the old one by path):")
    spark.sql(f"""
        SELECT 'current' AS generation, tokenizer_version, count(*) AS token_rows, count(DISTINCT event_date) AS days
        FROM user_day_tokens GROUP BY tokenizer_version
        UNION ALL
        SELECT 'previous', tokenizer_version, count(*), count(DISTINCT event_date)
        FROM delta.`{old_days}` GROUP BY tokenizer_version
    """).show(truncate=False)
    spark.sql(f"""
        SELECT n.user_id, n.source, n.event_date, o.codes AS {old.tokenizer_version.replace('-', '_')}_codes,
               n.codes AS {v2.replace('-', '_')}_codes
        FROM user_day_tokens n JOIN delta.`{old_days}` o USING (user_id, source, event_date)
        ORDER BY n.user_id, n.source, n.event_date
    """).show(8, truncate=False)
    echo(f"Tables are Delta tables under {Path(settings.tables_root).absolute()}; tokenizer bundles and the MLflow "
         f"registry (registry.db) under {Path(settings.model_dir).absolute()}. "
         "Query them with: u2qt sql \"SELECT ... FROM user_token_history\"; list versions with: u2qt versions")
    echo("Gates: " + json.dumps({v: {k: g["value"] for k, g in gs.items()} for v, gs in gates.items()}, default=str))
    if world_cfg.vocabulary_shift is not None:
        moved = _a_night_after_the_world_moved(spark, settings, world_cfg, run_dates, register, echo)
        if run_retrain is not None:
            _the_retraining_it_caused(spark, settings, moved[0], run_retrain, echo)
        dates += moved
    from pipelines.ops.night_report import write_report

    page = Path(settings.tables_root).absolute().parent / "report.html"
    write_report(spark, settings, dates[0], dates[-1], page)
    echo(f"The nights as one page (u2qt report --from {dates[0]} --to {dates[-1]}): {page}")
    echo(f"demo finished in {time.monotonic() - started:.0f} s")
    return {"versions": [v1, v2], "gates": gates}
