"""The night at scale: cost against history length, total users, and backfills as one job.

    python -m benchmarks.bench_scale --out bench_results [--config conf/bench.yaml] [--quick]
    (make bench-scale)

Three measurements, each on fresh temporary lakes, real Spark + Delta (local profile):

1. ``history``: one new day's ``publish`` for the same active users at history lengths
   ``history_days`` (default 1, 16, 64, 180). The history is built synthetically: random codes
   written straight into ``user_day_tokens`` for every past day, then compacted by
   ``history.compact_history`` as ``u2qt maintain`` would have; ``user_tokens`` holds every user.
   The new day is written to ``staging_day_tokens`` and published by the job's own ``publish``.
   Time and bytes written (Delta ``operationMetrics`` of every commit the publish made).
2. ``total_users``: the same night (the day's stage inputs without inference -- validation,
   documents, profiles as of the day -- then ``publish``) for the same active users with
   ``total_user_multipliers`` x as many users in ``user_profile`` / ``user_tokens``.
3. ``backfill``: a tiny world of ``backfill.dates`` days with a tiny trained tokenizer:
   ``u2qt run-day D`` once per date, each its own process as a per-date scheduler starts them
   (Spark session, model load and every small Spark job paid per date), against one
   ``u2qt backfill FIRST LAST`` process, each on its own copy of the lake.

Wall seconds and CPU seconds (the Spark JVM and its Python workers, or the child processes) are
recorded: the machine is shared, and CPU seconds are less noisy than wall time. Writes ``<out>/bench_scale.json``.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from benchmarks.cpu_meter import TreeCpuMeter
from benchmarks.common import (
    bench_arguments,
    repo_path,
    run_benchmark,
    spark_session,
)
from pipelines.lake.lake import Lake

log = logging.getLogger("benchmarks.scale")

BYTE_METRICS = ("numOutputBytes", "numTargetBytesAdded", "numAddedBytes")
START = date(2026, 1, 1)


# --------------------------------------------------------------------------- measuring


def table_versions(spark, settings) -> dict[str, int]:
    from delta.tables import DeltaTable

    from pipelines.lake import tables

    out = {}
    for spec in tables.OUTPUT_TABLES:
        path = Lake(spark, settings).path(spec.name)
        if tables.table_exists(spark, path):
            out[spec.name] = int(DeltaTable.forPath(spark, path).history(1).first()["version"])
    return out


def bytes_written_since(spark, settings, before: dict[str, int]) -> dict[str, Any]:
    """Bytes added per table by the commits after ``before`` (Delta operationMetrics)."""
    from delta.tables import DeltaTable

    from pipelines.lake import tables

    per_table: dict[str, int] = {}
    commits: list[dict] = []
    for spec in tables.OUTPUT_TABLES:
        path = Lake(spark, settings).path(spec.name)
        if not tables.table_exists(spark, path):
            continue
        for row in DeltaTable.forPath(spark, path).history().collect():
            if row["version"] <= before.get(spec.name, -1):
                continue
            metrics = row["operationMetrics"] or {}
            written = sum(int(metrics[k]) for k in BYTE_METRICS if k in metrics)
            per_table[spec.name] = per_table.get(spec.name, 0) + written
            commits.append({"table": spec.name, "version": int(row["version"]), "operation": row["operation"],
                            "bytes": written})
    return {"bytes_written": sum(per_table.values()), "bytes_per_table": per_table, "commits": commits}


# --------------------------------------------------------------------------- synthetic lake
def synthetic_info(settings):
    """A TokenizerInfo for a tokenizer that is never loaded (the publish path needs no model)."""
    from pipelines.night.day_run import TokenizerInfo

    sources = tuple(settings.sources_config().all_sources)
    return TokenizerInfo(model_dir="", version="u2qt-benchscale00", sources=sources,
                         tabular_sources=(sources[-1],), num_levels=4, shared_prefix_levels=2,
                         num_codes=256, variant="multiview")


def codes_frame(spark, info, active_users: int, event_dates: list[date], run_id: str, seed: int):
    """``user_day_tokens`` rows: every active user x source x date, random codes."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StructType

    from pipelines.runtime.local_rows import rows_frame

    users = spark.range(active_users).withColumnRenamed("id", "user_id")
    srcs = rows_frame(spark, [(s,) for s in info.sources], StructType.fromDDL("source string"))
    days = rows_frame(spark, [(d,) for d in event_dates], StructType.fromDDL("event_date date"))
    code = lambda i: (F.abs(F.xxhash64("user_id", "source", "event_date", F.lit(seed + i))) % info.num_codes).cast("smallint")  # noqa: E731
    return (users.crossJoin(srcs).crossJoin(days)
            .select("user_id", "event_date", "source", F.array(*[code(i) for i in range(info.num_levels)]).alias("codes"),
                    F.lit(info.version).alias("tokenizer_version"), F.lit(run_id).alias("run_id")))


def write_synthetic_lake(spark, settings, info, *, active_users: int, total_users: int, history_days: int,
                         new_day: date, with_raw_events: bool) -> None:
    """History of ``history_days`` days for the active users, profiles and identities of every
    user, the new day staged; compacted as ``u2qt maintain`` would leave it."""
    from pyspark.sql import functions as F

    from pipelines.lake import tables
    from pipelines.lake.history import compact_history

    past = [new_day - timedelta(days=history_days - i) for i in range(history_days)]
    for spec in (tables.USER_DAY_TOKENS, tables.STAGING_DAY_TOKENS, tables.USER_TOKENS):
        Lake(spark, settings).ensure(spec, info.version)
    codes_frame(spark, info, active_users, past, "bench-history", 0).repartition(
        max(1, history_days // 8), "event_date").write.format("delta").mode("append").save(
        Lake(spark, settings).path(tables.USER_DAY_TOKENS.name))
    compact_history(Lake(spark, settings))
    codes_frame(spark, info, active_users, [new_day], "bench-new-day", 1).write.format("delta").mode("append").save(
        Lake(spark, settings).path(tables.STAGING_DAY_TOKENS.name))
    users = spark.range(total_users).withColumnRenamed("id", "user_id")
    h = lambda salt: F.abs(F.xxhash64("user_id", F.lit(salt)))  # noqa: E731
    profiles = users.select(
        "user_id", F.lit(new_day - timedelta(days=30)).alias("as_of"), (18 + h(1) % 60).cast("int").alias("age"),
        F.when(h(2) % 2 == 0, "F").otherwise("M").alias("gender"), (1 + h(3) % 3).cast("int").alias("city_tier"),
        (h(4) % 3000).cast("int").alias("account_age_days"), (h(5) % 5).cast("int").alias("num_cards"),
        (h(6) % 100000 / 10.0).alias("avg_balance"), (300 + h(7) % 550).cast("int").alias("credit_score"),
        F.when(h(8) % 2 == 0, "ios").otherwise("android").alias("device_os"), (h(9) % 20 == 0).alias("is_merchant"),
        (h(10) % 1000 / 1000.0).alias("engagement"))
    profiles.write.format("delta").mode("overwrite").save(Lake(spark, settings).path(tables.USER_PROFILE.name))
    L = info.num_levels * len(info.sources)
    identity = users.select(
        "user_id", F.lit(new_day - timedelta(days=1)).alias("as_of"),
        F.array(*[(h(20 + i) % info.num_codes).cast("smallint") for i in range(L)]).alias("token_tuple"),
        F.array(*[F.lit(s) for s in info.sources]).alias("sources_present"), (h(10) % 1000 / 1000.0).alias("engagement"),
        F.lit(0).alias("collision_suffix"), F.lit(info.version).alias("tokenizer_version"), F.lit("bench-identity").alias("run_id"))
    identity.write.format("delta").mode("append").save(Lake(spark, settings).path(tables.USER_TOKENS.name))
    if with_raw_events:
        text_sources = [s for s in info.sources if s not in info.tabular_sources]
        events = (spark.range(active_users * 4).select(
            (F.col("id") % active_users).alias("user_id"), F.col("id").alias("n"))
            .select("user_id", (F.lit(f"{new_day} 08:00:00").cast("timestamp") + F.make_interval(
                secs=(F.col("n") % 3600).cast("int"))).alias("event_ts"),
                F.lit(new_day).alias("event_date"),
                F.element_at(F.array(*[F.lit(s) for s in text_sources]), (F.col("n") % len(text_sources) + 1).cast("int")).alias("source"),
                F.concat(F.lit("event "), (F.col("n") % 97).cast("string")).alias("text"),
                (F.col("n") % 50).cast("double").alias("amount"), F.lit("ok").alias("status")))
        events.write.format("delta").partitionBy("event_date").mode("overwrite").save(Lake(spark, settings).path(tables.RAW_EVENTS.name))


def stage_inputs(run) -> int:
    """Everything ``stage`` does before inference (validation, documents, profiles): input rows."""
    from pipelines.night.documents import build_documents, build_tabular_inputs, profiles_as_of
    from pipelines.night.validation import check_profiles, check_raw_events

    events = run.read("raw_events").where(run.date_predicate)
    valid = check_raw_events(events, run.sources, run.settings.validation).valid
    active = valid.select("user_id", "event_date").distinct()
    profiles = check_profiles(profiles_as_of(run.read("user_profile"), active), run.sources).valid
    return build_documents(valid, run.sources).unionByName(build_tabular_inputs(profiles, run.sources)).count()


def one_night(spark, tmp: Path, info, *, active_users: int, total_users: int, history_days: int,
              with_stage: bool) -> dict[str, Any]:
    from benchmarks.common import pipeline_settings
    from pipelines.night.day_run import DayRun
    from pipelines.night.publish import publish

    settings = pipeline_settings(tmp / "lake", tmp / "model", {"history": {"period_days": 30}})
    new_day = START + timedelta(days=history_days)
    write_synthetic_lake(spark, settings, info, active_users=active_users, total_users=total_users,
                         history_days=history_days, new_day=new_day, with_raw_events=with_stage)
    run = DayRun(spark, settings, new_day.isoformat(), "bench-night", info)
    out: dict[str, Any] = {"active_users": active_users, "total_users": total_users, "history_days": history_days}
    if with_stage:
        with TreeCpuMeter() as m:
            out["stage_input_rows"] = stage_inputs(run)
        out["stage_inputs"] = m.result()
    before = table_versions(spark, settings)
    with TreeCpuMeter() as m:
        out["publish_metrics"] = publish(run)
    out["publish"] = {**m.result(), **bytes_written_since(spark, settings, before)}
    log.info("scale: %d active / %d total users, %d days of history: publish %.1fs wall %.1fs CPU, %d bytes written",
             active_users, total_users, history_days, out["publish"]["wall_s"], out["publish"]["cpu_s"],
             out["publish"]["bytes_written"])
    shutil.rmtree(tmp, ignore_errors=True)
    return out


def _ratios(entries: list[dict], key: str, step: str) -> dict[str, float]:
    base = entries[0]
    out = {}
    for e in entries[1:]:
        for metric in ("wall_s", "cpu_s", "bytes_written"):
            if metric in e[step] and base[step].get(metric):
                out[f"{e[key]}x{base[key]}_{step}_{metric}"] = round(e[step][metric] / base[step][metric], 3)
    return out


# --------------------------------------------------------------------------- backfill
def _cli(args: list[str], config: Path) -> dict[str, float]:
    """One ``u2qt`` command in its own process (as Airflow or cron would start it): wall seconds
    and the CPU seconds of its process tree (the CLI, its Spark JVM, the JVM's Python workers)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli.main", *args, "--config", str(config)],
                            cwd=repo_path("."), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with TreeCpuMeter(root=proc.pid) as meter:
        _, stderr = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"u2qt {' '.join(args)} failed ({proc.returncode}):\n{stderr[-3000:]}")
    return meter.result()


def bench_backfill(spark, tmp: Path, params: dict[str, Any]) -> dict[str, Any]:
    """``backfill.dates`` dates of a tiny world: ``u2qt run-day`` once per date (one process each,
    as a per-date scheduler runs them) against one ``u2qt backfill FIRST LAST`` process."""
    import yaml

    from benchmarks.common import pipeline_settings, train_promoted
    from pipelines.world import load_world_config, write_world

    n_dates = int(params["dates"])
    world = load_world_config(repo_path(params["world"]), {**(params.get("world_overrides") or {}), "n_days": n_dates})
    seed_root = tmp / "seed"
    settings = pipeline_settings(seed_root / "lake", seed_root / "model", params.get("settings_overrides"))
    write_world(spark, world, settings.tables_root)
    train_promoted(spark, settings)
    dates = [d.isoformat() for d in world.history_dates()]
    out: dict[str, Any] = {"dates": n_dates, "n_users": world.n_users}
    for name in ("one_job", "one_by_one"):
        root = tmp / name
        shutil.copytree(seed_root, root)
        s = pipeline_settings(root / "lake", root / "model", params.get("settings_overrides"))
        config = root / "pipeline.yaml"
        config.write_text(yaml.safe_dump(s.model_dump(mode="json")))
        if name == "one_job":
            out[name] = _cli(["backfill", dates[0], dates[-1]], config)
        else:
            runs = [_cli(["run-day", d], config) for d in dates]
            out[name] = {"wall_s": sum(r["wall_s"] for r in runs), "cpu_s": sum(r["cpu_s"] for r in runs),
                         "per_date_wall_s": [round(r["wall_s"], 2) for r in runs]}
        days = spark.read.format("delta").load(Lake(spark, s).path("user_day_tokens")).count()
        out[name]["user_day_tokens_rows"] = days
        log.info("scale: %d dates %s: %s", n_dates, name, {k: v for k, v in out[name].items() if k != "per_date_wall_s"})
    out["speedup_wall"] = round(out["one_by_one"]["wall_s"] / out["one_job"]["wall_s"], 3)
    out["speedup_cpu"] = round(out["one_by_one"]["cpu_s"] / out["one_job"]["cpu_s"], 3) if out["one_job"]["cpu_s"] else None
    return out


def summary_lines(payload: dict) -> list[str]:
    """The ratios of each section, one line each (logged after the run)."""
    r = payload["results"]
    lines = [f"bench_scale: wall {payload.get('wall_seconds', 0):.0f}s, "
             f"load {payload.get('load_average_before')} -> {payload.get('load_average_after')}"]
    for section in ("history", "total_users"):
        for name, value in (r.get(section) or {}).get("ratios", {}).items():
            lines.append(f"  {section} {name}: {value:.2f}")
    if "backfill" in r:
        b = r["backfill"]
        lines.append(f"  backfill of {b['dates']} dates as one job: {b['speedup_wall']:.2f}x faster (wall), "
                     f"{b['speedup_cpu']}x (CPU) than one run per date")
    return lines


# --------------------------------------------------------------------------- driver
def bench_scale(params: dict[str, Any], tmp_root: Path | None = None, only: list[str] | None = None) -> dict[str, Any]:
    own_tmp = tmp_root is None
    tmp_root = Path(tempfile.mkdtemp(prefix="u2qt-bench-scale-")) if own_tmp else Path(tmp_root)
    try:
        spark = spark_session(tmp_root)
        from benchmarks.common import pipeline_settings

        info = synthetic_info(pipeline_settings(tmp_root / "x", tmp_root / "y"))
        sections = only or ["history", "total_users", "backfill"]
        out: dict[str, Any] = {"parameters": params}
        active = int(params["active_users"])
        if "history" in sections:
            runs = [one_night(spark, tmp_root / f"h{h}", info, active_users=active, total_users=active,
                              history_days=int(h), with_stage=False) for h in params["history_days"]]
            out["history"] = {"runs": runs, "ratios": _ratios(runs, "history_days", "publish")}
        if "total_users" in sections:
            h = int(params.get("total_users_history_days", 16))
            runs = [one_night(spark, tmp_root / f"u{k}", info, active_users=active, total_users=active * int(k),
                              history_days=h, with_stage=True) for k in params["total_user_multipliers"]]
            for r, k in zip(runs, params["total_user_multipliers"]):
                r["multiplier"] = int(k)
            out["total_users"] = {"runs": runs, "ratios": {**_ratios(runs, "multiplier", "publish"),
                                                           **_ratios(runs, "multiplier", "stage_inputs")}}
        if "backfill" in sections:
            out["backfill"] = bench_backfill(spark, tmp_root / "backfill", params["backfill"])
        return out
    finally:
        if own_tmp:
            shutil.rmtree(tmp_root, ignore_errors=True)


def run(config: dict[str, Any], out_dir: str | Path, tmp_root: Path | None = None, only: list[str] | None = None) -> dict:
    """Run ``config['scale']`` and write ``<out_dir>/bench_scale.json``."""
    return run_benchmark("bench_scale", lambda: bench_scale(config["scale"], tmp_root, only), out_dir, summary_lines)


def main(argv: list[str] | None = None) -> int:
    args, config = bench_arguments(__doc__.split("\n")[0], argv, lambda parser: parser.add_argument(
        "--only", action="append", choices=["history", "total_users", "backfill"]))
    run(config, args.out, only=args.only)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
