"""One date's run of the nightly job: the tokenizer it uses, where it reads and writes, and
what every step records in ``run_metrics``.

:class:`DayRun` is shared by the three steps (:mod:`pipelines.night.stage`, :mod:`pipelines.night.quality`,
:mod:`pipelines.night.daily_job`'s ``publish``); :func:`record_steps` appends the rows of many dates in
one commit (a backfill); :func:`day_tuples` is the per-(user, date) full token tuple that the
quality gates and the identity table both use.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from pipelines.config.settings import PipelineSettings, SourcesConfig
from pipelines.dates import iso_date
from pipelines.lake import tables
from pipelines.lake.lake import Lake
from pipelines.runtime.local_rows import rows_frame
from u2qt_core.errors import CheckpointError, InputError, U2QTError
from u2qt_core.token_strings import TokenFormat

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenizerInfo:
    """What the driver needs to know about the tokenizer (without loading it for inference)."""

    model_dir: str
    version: str
    sources: tuple[str, ...]
    tabular_sources: tuple[str, ...]
    num_levels: int
    shared_prefix_levels: int      # MRQVAEConfig.token_shared_levels: leading levels of shared codebooks
    num_codes: int
    variant: str
    numeric_path: str = ""         # the encoder's path this run computes on (checked against the bundle's)
    architecture: str = "foundv2"  # or "u2qt_aaai" (u2qt_core.u2qt_model): how the night feeds the model


def night_contract(settings: PipelineSettings) -> dict:
    """What besides the MRQ-VAE decides this pipeline's codes (hashed into a bundle's version,
    :mod:`u2qt_core.bundle`): the encoder identity and the input contract of ``sources.yaml``
    (source list and order, labels and instructions, document format, tabular transforms)."""
    from u2qt_core.bundle import encoder_identity

    sources = settings.sources_config()
    inputs = sources.model_dump(mode="json")
    # which sources a U²QT front end reads is part of its model (the bundle's architecture.frontend,
    # compared by check_context); FOUNDv2 ignores it, so it is not an input setting of the contract
    inputs.pop("context_sources", None)
    return {"encoder": encoder_identity(settings.encoder), "inputs": {"sources": sources.all_sources, **inputs}}


def load_tokenizer_info(settings: PipelineSettings, tokenizer_version: str | None = None, *,
                        spark: SparkSession | None = None) -> TokenizerInfo:
    """The tokenizer a run uses: ``tokenizer_version``, or the one the registry alias names now
    (:func:`pipelines.tokenizer.registry.resolve`). Its bundle's contract is compared with these settings
    first: a differing encoder or input setting is refused in one line naming the field, and a
    numeric path (device, precision, runtime) other than the bundle's and not validated for it is
    refused by :func:`pipelines.night.numeric_path.check_night_path` (``spark``: whose conf says
    whether the executors have GPUs; default the active session)."""
    from dataclasses import replace

    from pipelines.night.numeric_path import check_night_path, planned_path
    from pipelines.tokenizer import registry
    from u2qt_core.bundle import check_contract, load_bundle

    entry = registry.find(settings, tokenizer_version) if tokenizer_version else registry.resolve(settings)
    model, version, contract = load_bundle(entry.bundle)
    check_contract(contract, night_contract(settings), version)
    check_context(contract, settings, version)
    path = check_night_path(settings, version, contract, entry.tags, planned_path(settings, spark))
    return replace(tokenizer_info(entry.bundle, model, version), numeric_path=path.label)


def check_context(contract: dict, settings: PipelineSettings, version: str) -> None:
    """A U²QT-AAAI bundle's front end was trained reading the sources config's ``context_sources``;
    a night whose sources config says otherwise is refused (its codes would mean something else)."""
    from u2qt_core.bundle import ContractMismatch

    frontend = (contract.get("architecture") or {}).get("frontend")
    if frontend is None:
        return
    ours = {s: list(c) for s, c in settings.sources_config().context_sources.items()}
    if frontend.get("context_sources", {}) != ours:
        raise ContractMismatch(
            f"tokenizer {version} was trained with context_sources = {frontend.get('context_sources', {})!r} but this "
            f"run's sources config has {ours!r}: restore it, or train, evaluate and promote a tokenizer for the new one")


def tokenizer_info(folder: str | Path, model, version: str) -> TokenizerInfo:
    """The :class:`TokenizerInfo` of a loaded tokenizer saved in ``folder``: an MRQVAE (FOUNDv2)
    or a U2QTTokenizer, whose ``config`` is its MRQ-VAE's and whose tabular sources its front end's."""
    cfg = model.config
    frontend = getattr(model, "frontend_config", None)
    return TokenizerInfo(
        model_dir=str(folder), version=version, sources=tuple(cfg.sources),
        tabular_sources=tuple(frontend.tabular_sources if frontend is not None else cfg.tabular_sources),
        num_levels=cfg.num_levels, shared_prefix_levels=cfg.token_shared_levels, num_codes=cfg.num_codes,
        variant=cfg.variant, architecture="u2qt_aaai" if frontend is not None else "foundv2",
    )


def token_format(settings: PipelineSettings, tokenizer_version: str | None = None) -> TokenFormat | None:
    """The token format of ``tokenizer_version`` (default: the registry alias's) that the
    token-string view renders (:func:`pipelines.lake.views.view_definitions`); None, logged, when
    there is none."""
    try:
        info = load_tokenizer_info(settings, tokenizer_version)
    except U2QTError as exc:
        log.warning("token-string view skipped: %s", exc)
        return None
    return TokenFormat(info.shared_prefix_levels, info.variant, info.num_codes, info.sources)


def analyst_lake(spark: SparkSession, settings: PipelineSettings) -> tuple[Lake, TokenFormat | None]:
    """What analysts read: the lake at the current table generation (the pointer's) and the token
    format of the version it holds (``u2qt sql``'s temp views, ``u2qt catalog``)."""
    now = Lake(spark, settings).current()
    return Lake(spark, settings, now.generation), token_format(settings, now.tokenizer_version)


def open_run(spark: SparkSession, settings: PipelineSettings, event_date: str, run_id: str | None = None,
             tokenizer_version: str | None = None, generation: str | None = None) -> "DayRun":
    """The :class:`DayRun` of ``run_id`` with its tokenizer resolved once per run: the first step
    of a run resolves the registry alias (or takes ``tokenizer_version``) and records the version
    and the table generation it writes (``generation``, default the one of that version:
    :meth:`Lake.for_version`; step ``resolve`` in ``run_metrics``); every later step of the same
    run id (an Airflow task, a retry, a spark-submit) reuses both, so a promotion or a generation
    switch during the night changes nothing for it."""
    run_id = run_id or default_run_id(event_date)
    pinned = _resolved(Lake(spark, settings), run_id)
    if pinned is not None:
        info = load_tokenizer_info(settings, pinned[0], spark=spark)
        return DayRun(spark, settings, event_date, run_id, info, pinned[1])
    info = load_tokenizer_info(settings, tokenizer_version, spark=spark)
    if generation is None:
        generation = Lake.for_version(spark, settings, info.version).generation
    run = DayRun(spark, settings, event_date, run_id, info, generation)
    run.record("resolve", "ok", 0.0, {"alias": None if tokenizer_version else settings.registry.alias,
                                      "bundle": info.model_dir, "generation": generation,
                                      "numeric_path": info.numeric_path})
    log.info("run %s uses tokenizer %s (%s) on numeric path %s, table generation %r", run_id, info.version,
             "given" if tokenizer_version else f"{settings.registry.model_name}@{settings.registry.alias}",
             info.numeric_path, generation)
    return run


def _resolved(lake: Lake, run_id: str) -> tuple[str, str] | None:
    """(tokenizer version, generation) recorded by the first step of ``run_id``, if any."""
    if not lake.exists(tables.RUN_METRICS.name):
        return None
    rows = (lake.read(tables.RUN_METRICS.name).where((F.col("run_id") == run_id) & (F.col("step") == "resolve"))
            .orderBy("recorded_at").select("tokenizer_version", "metrics_json").limit(1).collect())
    if not rows:
        return None
    return rows[0]["tokenizer_version"], json.loads(rows[0]["metrics_json"]).get("generation", "")


@dataclass
class DayRun:
    """One date's run: where it reads and writes (:attr:`lake`, at the run's table generation) and
    which tokenizer it uses."""

    spark: SparkSession
    settings: PipelineSettings
    event_date: str
    run_id: str
    tokenizer: TokenizerInfo
    generation: str = ""
    sources: SourcesConfig = field(init=False)
    lake: Lake = field(init=False)

    def __post_init__(self) -> None:
        self.lake = Lake(self.spark, self.settings, self.generation)
        iso_date(self.event_date, "event date")  # an InputError names a bad date before any read
        check_run_id(self.run_id)
        self.sources = self.settings.sources_config()
        missing = set(self.sources.all_sources) - set(self.tokenizer.sources)
        if missing:
            raise CheckpointError(
                f"tokenizer {self.tokenizer.version} has no codebooks for source(s) {sorted(missing)} "
                f"configured in {self.settings.sources}"
            )

    @property
    def date_predicate(self) -> str:
        return f"event_date = DATE'{self.event_date}'"

    def path(self, name: str) -> str:
        return self.lake.path(name)

    def read(self, name: str) -> DataFrame:
        return self.lake.read(name)

    def replace_partition(self, frame: DataFrame, spec: tables.TableSpec, predicate: str | None = None) -> None:
        """Atomically replace this date's partition of ``spec`` with ``frame`` (or the
        partitions ``predicate`` selects, e.g. :func:`dates_predicate` of a backfill)."""
        self.lake.ensure(spec, self.tokenizer.version)
        (frame.select(*[f.name for f in spec.schema.fields])
            .write.format("delta").mode("overwrite")
            .option("replaceWhere", predicate or self.date_predicate)
            .option("mergeSchema", "true")    # a column added to the spec reaches tables written before it
            .save(self.path(spec.name)))

    def record(self, step: str, status: str, seconds: float, metrics: dict) -> None:
        """Append this date's row of ``step`` to ``run_metrics`` (:func:`record_steps` of one)."""
        record_steps([StepRecord(self, step, status, seconds, metrics)])


@dataclass(frozen=True)
class StepRecord:
    """One ``run_metrics`` row: a step of a date's run, its status, seconds and metrics."""

    run: DayRun
    step: str
    status: str
    seconds: float
    metrics: dict


def record_steps(records: list[StepRecord]) -> None:
    """Append ``records`` to ``run_metrics`` in ONE commit (a backfill records a step of all its
    dates at once: one Delta commit instead of one per date)."""
    if not records:
        return
    first = records[0].run
    first.lake.ensure(tables.RUN_METRICS)
    fields = [f for f in tables.RUN_METRICS.schema.fields if f.name != "recorded_at"]
    rows = [tuple(_metrics_row(r)[f.name] for f in fields) for r in records]
    frame = rows_frame(first.spark, rows, StructType(fields)).withColumn("recorded_at", F.current_timestamp())
    frame.write.format("delta").mode("append").save(first.path(tables.RUN_METRICS.name))


def _metrics_row(record: StepRecord) -> dict:
    run, metrics = record.run, record.metrics
    return {
        "run_id": run.run_id, "event_date": date.fromisoformat(run.event_date), "step": record.step,
        "status": record.status, "tokenizer_version": run.tokenizer.version,
        "active_users": metrics.get("active_users"), "token_rows": metrics.get("token_rows"),
        "quarantined_rows": metrics.get("quarantined_rows"),
        "collision_rate": metrics.get("collision_rate"),
        "min_level_utilization": metrics.get("min_level_utilization"),
        "seconds": float(record.seconds), "metrics_json": json.dumps(metrics, sort_keys=True, default=str),
    }


def day_tuples(run: DayRun, day_tokens: DataFrame) -> DataFrame:
    """Per active (user, date) of ``day_tokens`` (one date or many): the full token tuple over all
    sources in token order (``-1`` x L for a source without tokens that day) and the sources present."""
    L = run.tokenizer.num_levels
    order = run.sources.all_sources
    per_user = day_tokens.groupBy("user_id", "event_date").agg(
        F.map_from_entries(F.collect_list(F.struct("source", "codes"))).alias("by_source")
    )
    missing = F.array_repeat(F.lit(-1).cast("smallint"), L)
    return per_user.select(
        "user_id", "event_date",
        F.flatten(F.array(*[F.coalesce(F.col("by_source")[s], missing) for s in order])).alias("token_tuple"),
        F.filter(F.array(*[F.lit(s) for s in order]), lambda s: F.col("by_source")[s].isNotNull()).alias("sources_present"),
    )


def dates_predicate(event_dates: list[str]) -> str:
    """SQL predicate selecting the ``event_date`` partitions of ``event_dates``."""
    return "event_date IN (" + ", ".join(f"DATE'{iso_date(d, 'event date')}'" for d in event_dates) + ")"


#: the run types whose ids Airflow writes as ``<type>__<suffix>`` (``DagRunType`` of Airflow 3;
#: tests/dags/test_run_ids.py checks this list against Airflow's own enum and format function)
AIRFLOW_RUN_TYPES = ("backfill", "scheduled", "manual", "operator_triggered", "asset_triggered",
                     "asset_materialization")
#: the prefix of the run ids the pipeline makes itself (CLI, spark-submit, benchmarks)
PIPELINE_RUN_PREFIX = "u2qt"
MAX_RUN_ID_CHARS = 250     # Airflow's own limit on run_id


def default_run_id(event_date: str) -> str:
    """A run id for a run outside Airflow: ``u2qt__<date>__<unix seconds>`` (never an Airflow prefix)."""
    return f"{PIPELINE_RUN_PREFIX}__{event_date}__{int(time.time())}"


def check_run_id(run_id: str) -> str:
    """Accept any run id Airflow makes (``manual__2026-01-05T00:00:00+00:00``, with the random
    suffix of an id without logical date, ...) or the pipeline's own, and refuse what cannot be
    recorded faithfully: empty, over 250 characters, or holding control characters."""
    text = str(run_id or "")
    if not text.strip():
        raise InputError("run id is empty")
    if len(text) > MAX_RUN_ID_CHARS:
        raise InputError(f"run id {text[:40]!r}... is {len(text)} characters (at most {MAX_RUN_ID_CHARS})")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise InputError(f"run id {text!r} holds control characters")
    return text


def run_origin(run_id: str) -> str:
    """``"airflow"`` for an id of an Airflow run type, ``"u2qt"`` for the pipeline's own
    (:func:`default_run_id`), ``"other"`` for anything else a caller passed."""
    prefix, sep, _ = str(run_id).partition("__")
    if sep and prefix in AIRFLOW_RUN_TYPES:
        return "airflow"
    if sep and prefix == PIPELINE_RUN_PREFIX:
        return "u2qt"
    return "other"


def record_failure(runs: list[DayRun], step: str, started: float, exc: BaseException) -> None:
    """``status = failed`` rows in ``run_metrics`` naming the error (one commit for all dates); a
    failure to record is logged, never hides the original error."""
    error = " ".join(f"{type(exc).__name__}: {exc}".split())[:2000]
    seconds = (time.monotonic() - started) / max(len(runs), 1)
    try:
        record_steps([StepRecord(r, step, "failed", seconds, {"error": error}) for r in runs])
    except Exception:  # noqa: BLE001 -- the step's own error is the one to report
        log.exception("could not record the failed %s of %s in run_metrics", step, [r.event_date for r in runs])
