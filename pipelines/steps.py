"""The one registry of steps: what ``u2qt step``, ``u2qt-submit`` (spark-submit) and the DAGs run.

A step is a name, the dates it takes, the named arguments it takes, and a function of a
:class:`StepCall`. The three entry points only parse their own command lines and hand over here:

* ``u2qt step NAME [DATES] [--arg key=value]`` and the friendlier typer commands (``u2qt maintain``,
  ``u2qt backfill`` ...) call :func:`launch`;
* ``u2qt-submit NAME [DATES]`` (:mod:`pipelines.deploy.submit`, the spark-submit application) calls
  :func:`launch` and maps a raised error to its exit code with :func:`pipelines.errors.exit_code`;
* a DAG task (:func:`pipelines.deploy.dag_builder.step_task`) runs :func:`launch` in the Airflow
  worker or submits ``u2qt-submit NAME``.

Adding a step is one :func:`step` entry below, pointing at the step's own module; every entry
point offers it from then on. Dates are checked before Spark starts; Spark itself starts only
when a step first reads :attr:`StepCall.spark` (``promote`` never does).
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any, Callable

from pipelines.config.settings import PipelineSettings
from pipelines.dates import date_range, iso_date
from u2qt_core.errors import InputError

log = logging.getLogger("u2qt.steps")

#: what a step's dates are: nothing, one date, or a first and last date (the last optional)
DATE_KINDS = ("none", "day", "range", "optional range")


@dataclass
class StepCall:
    """One call of a step: its settings, dates (checked ISO strings), run id and named arguments."""

    step: "Step"
    settings: PipelineSettings
    dates: list[str]
    run_id: str | None = None
    args: dict[str, str] = field(default_factory=dict)
    master: str | None = None
    given_spark: Any = None

    @cached_property
    def spark(self):
        """The session, built on first use with the step's session conf (the catalog's metastore)."""
        if self.given_spark is not None:
            return self.given_spark
        from pipelines.runtime.spark_session import get_spark

        extra = self.step.session_conf(self.settings) if self.step.session_conf else None
        return get_spark(self.settings.spark_profile, app_name=f"u2qt_{self.step.name.replace('-', '_')}",
                         extra_conf=extra, master=self.master)

    @cached_property
    def lake(self):
        """The :class:`~pipelines.lake.lake.Lake` at the current table generation, resolved once
        (a dated night step resolves its own: :meth:`day_run`)."""
        from pipelines.lake.lake import Lake

        return Lake.open(self.spark, self.settings)

    def arg(self, name: str, default: str | None = None) -> str | None:
        return self.args.get(name, default)

    def days(self) -> list[str]:
        """Every date of the call: its one date, or each date of its range."""
        if len(self.dates) == 2:
            return date_range(*self.dates)
        return list(self.dates)

    def day_run(self, event_date: str | None = None):
        """The :class:`~pipelines.night.day_run.DayRun` of the call's date under its run id."""
        from pipelines.night.day_run import open_run

        return open_run(self.spark, self.settings, event_date or self.dates[0], self.run_id)


@dataclass(frozen=True)
class Step:
    """One registered step."""

    name: str
    summary: str
    run: Callable[[StepCall], dict]
    dates: str = "none"
    args: tuple[str, ...] = ()
    required_args: tuple[str, ...] = ()
    session_conf: Callable[[PipelineSettings], dict[str, str]] | None = None

    def check(self, dates: list[str], args: dict[str, str]) -> list[str]:
        """``dates`` as the step wants them (ISO strings), and ``args`` known and complete; an
        :class:`InputError` naming the step otherwise. Runs before Spark starts."""
        wanted = {"none": (0, 0), "day": (1, 1), "range": (1, 2), "optional range": (0, 2)}[self.dates]
        if not wanted[0] <= len(dates) <= wanted[1]:
            shape = {"none": "no date", "day": "one DATE", "range": "START [END]", "optional range": "[START END]"}
            raise InputError(f"step {self.name} takes {shape[self.dates]}, got {len(dates)} date(s): {dates}")
        checked = [iso_date(d, f"{self.name} date").isoformat() for d in dates]
        if self.dates == "range" and len(checked) == 1:
            checked = checked * 2
        if len(checked) == 2 and checked[1] < checked[0]:
            raise InputError(f"step {self.name}: end date {checked[1]} is before start date {checked[0]}")
        unknown = sorted(set(args) - set(self.args))
        if unknown:
            raise InputError(f"step {self.name}: unknown argument(s) {unknown}; it takes {list(self.args) or 'none'}")
        missing = [a for a in self.required_args if a not in args]
        if missing:
            raise InputError(f"step {self.name}: missing argument(s) {missing} (give --arg {missing[0]}=...)")
        return checked


STEPS: dict[str, Step] = {}


def step(name: str, summary: str, *, dates: str = "none", args: tuple[str, ...] = (),
         required_args: tuple[str, ...] = (), session_conf=None):
    """Register the decorated ``fn(call) -> dict`` as step ``name``."""
    assert dates in DATE_KINDS, dates

    def register(fn: Callable[[StepCall], dict]) -> Callable[[StepCall], dict]:
        STEPS[name] = Step(name, summary, fn, dates, args, required_args, session_conf)
        return fn

    return register


def get(name: str) -> Step:
    try:
        return STEPS[name]
    except KeyError:
        raise InputError(f"unknown step {name!r}; steps: {', '.join(STEPS)}") from None


def prepare(name: str, settings: PipelineSettings, dates: list[str] | None = None, run_id: str | None = None,
            args: dict[str, str] | None = None, *, spark=None, master: str | None = None) -> StepCall:
    """The checked call of step ``name`` (nothing started yet)."""
    chosen = get(name)
    args = dict(args or {})
    checked = chosen.check(list(dates or []), args)
    return StepCall(chosen, settings, checked, run_id, args, master, spark)


def launch(name: str, settings: PipelineSettings, dates: list[str] | None = None, run_id: str | None = None,
           args: dict[str, str] | None = None, *, spark=None, master: str | None = None) -> dict:
    """Check, then run step ``name``; returns its JSON-able result. Errors propagate (the entry
    point maps them with :func:`pipelines.errors.exit_code`)."""
    call = prepare(name, settings, dates, run_id, args, spark=spark, master=master)
    log.info("step %s %s%s", name, " ".join(call.dates), f" (run {run_id})" if run_id else "")
    return call.step.run(call)


def parse_args(pairs: list[str] | None) -> dict[str, str]:
    """``["version=u2qt-1", "force=true"]`` -> a dict; a pair without ``=`` is an InputError."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--arg {pair!r}: want key=value")
        out[key.strip()] = value
    return out


def _flag(value: str | None) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


# ---- the steps -----------------------------------------------------------------------------------

def _catalog_conf(settings: PipelineSettings) -> dict[str, str]:
    from pipelines.lake.catalog import catalog_session_conf

    return catalog_session_conf(settings)


@step("init", "create every missing output table, pinned to the promoted tokenizer, in the generation its nights write")
def _init(call: StepCall) -> dict:
    from pipelines.lake.lake import Lake
    from pipelines.night.day_run import load_tokenizer_info

    version = load_tokenizer_info(call.settings).version   # the alias now; the first dated step records its own
    return {"tables": Lake.for_version(call.spark, call.settings, version).create_all(version)}


@step("stage", "night step 1: validate, quarantine, infer the day's tokens into staging", dates="day")
def _stage(call: StepCall) -> dict:
    from pipelines.night.stage import stage

    return asdict(stage(call.day_run()))


@step("quality", "night step 2: the quality gates on the staged day (exit 3 when one fails)", dates="day")
def _quality(call: StepCall) -> dict:
    from pipelines.night.quality import check_quality

    return check_quality(call.day_run())


@step("publish", "night step 3: make the staged, gated day visible (user_day_tokens, user_tokens)", dates="day")
def _publish(call: StepCall) -> dict:
    from pipelines.night.publish import publish

    return publish(call.day_run())


@step("run-day", "the three night steps for one date in this process, one tokenizer resolved once", dates="day")
def _run_day(call: StepCall) -> dict:
    from pipelines.night.daily_job import run_day

    return run_day(call.spark, call.settings, call.dates[0], call.run_id)


@step("backfill", "every date of START..END (or of --arg dates=D1,D2) as one Spark job", dates="optional range",
      args=("dates",))
def _backfill(call: StepCall) -> dict:
    from pipelines.night.backfill import backfill

    listed = [d.strip() for d in (call.arg("dates") or "").split(",") if d.strip()]
    if listed and call.dates:
        raise InputError("step backfill: give either START [END] or --arg dates=..., not both")
    if not listed and not call.dates:
        raise InputError("step backfill: give START [END] or --arg dates=D1,D2,...")
    days = sorted({iso_date(d, "backfill date").isoformat() for d in listed}) if listed else call.days()
    return backfill(call.spark, call.settings, days)


def _recorded(run, step_name: str, work: Callable[..., dict]) -> dict:
    """``work(run)``; a failure is recorded as ``status = failed`` in ``run_metrics`` (with the
    error), then re-raised, as the night's own steps do."""
    import time

    from pipelines.night.day_run import record_failure

    started = time.monotonic()
    try:
        return work(run)
    except Exception as exc:
        record_failure([run], step_name, started, exc)
        raise


@step("features", "user_features as of each date of START..END", dates="range")
def _features(call: StepCall) -> dict:
    from pipelines.features.user_features import build_features

    return {day: _recorded(call.day_run(day), "features", build_features) for day in call.days()}


@step("train-sequence", "train the sequence encoder on the token histories up to DATE", dates="day")
def _train_sequence(call: StepCall) -> dict:
    from pipelines.features.sequence_encoder import train_sequence_encoder

    return _recorded(call.day_run(), "train_sequence", train_sequence_encoder)


@step("train", "sample the lake, train a tokenizer bundle and register it (not promoted)", dates="optional range")
def _train(call: StepCall) -> dict:
    from pipelines.tokenizer.train_job import train

    start, end = (call.dates + [None, None])[:2]
    summary = train(call.spark, call.settings, start_date=start, end_date=end)
    return {k: v for k, v in summary.items() if k != "metrics"}


@step("evaluate", "the promotion gates of a registered version on the held-out days, recorded on it",
      args=("version",), required_args=("version",))
def _evaluate(call: StepCall) -> dict:
    from pipelines.tokenizer.promotion_gates import evaluate

    return evaluate(call.spark, call.settings, call.arg("version"))


@step("promote", "point the registry alias at a version that passed its gates (force=true to override)",
      args=("version", "force", "reason"), required_args=("version",))
def _promote(call: StepCall) -> dict:
    from pipelines.tokenizer.registry import promote

    entry = promote(call.settings, call.arg("version"), force=_flag(call.arg("force")), reason=call.arg("reason", ""))
    return {"promoted": entry.tokenizer_version, "registry_version": entry.registry_version, "bundle": entry.bundle}


def _retokenize_conf(settings: PipelineSettings) -> dict[str, str] | None:
    from pipelines.lake.catalog import catalog_dir

    return _catalog_conf(settings) if settings.catalog.metastore == "embedded" and catalog_dir(settings).exists() else None


@step("retokenize", "tokenize START..END with a version into a new table generation, then switch to it",
      dates="range", args=("version",), required_args=("version",), session_conf=_retokenize_conf)
def _retokenize(call: StepCall) -> dict:
    from pipelines.lake.catalog import register_catalog
    from pipelines.night.day_run import analyst_lake
    from pipelines.tokenizer.retokenize import retokenize

    result = retokenize(call.spark, call.settings, call.arg("version"), *call.dates)
    if _retokenize_conf(call.settings):
        result["catalog"] = register_catalog(*analyst_lake(call.spark, call.settings))
    return result


@step("maintain", "Delta upkeep: compact the history base, OPTIMIZE, log retention, VACUUM")
def _maintain(call: StepCall) -> dict:
    from pipelines.ops.maintenance import maintain

    return maintain(call.lake)


@step("forget", "erase the users of a file (one user_id per line) from every table",
      args=("user_ids", "vacuum_retain_hours"), required_args=("user_ids",))
def _forget(call: StepCall) -> dict:
    from pipelines.ops.forget import forget_users, read_user_ids

    ids = read_user_ids(call.arg("user_ids"))
    hours = call.arg("vacuum_retain_hours")
    deleted = forget_users(call.spark, call.settings, ids, vacuum_retain_hours=float(hours) if hours else None)
    return {"users": len(ids), "rows_deleted": deleted}


@step("catalog", "register the tables and views in the persistent metastore for spark-sql", session_conf=_catalog_conf)
def _catalog(call: StepCall) -> dict:
    from pipelines.lake.catalog import register_catalog
    from pipelines.night.day_run import analyst_lake

    return {"registered": register_catalog(*analyst_lake(call.spark, call.settings))}


@step("retrain-due", "did the night of DATE (this run id) mark its tokenizer due for retraining, first of its nights",
      dates="day")
def _retrain_due(call: StepCall) -> dict:
    from pipelines.night.drift import newly_due

    return newly_due(call.spark, call.settings, call.dates[0], call.run_id)


@step("report", "one HTML page picturing the nights of START..END: a line per source, thresholds and events drawn",
      dates="range", args=("out",), required_args=("out",))
def _report(call: StepCall) -> dict:
    from pipelines.ops.night_report import write_report

    return write_report(call.spark, call.settings, call.dates[0], call.dates[1], call.arg("out"))
