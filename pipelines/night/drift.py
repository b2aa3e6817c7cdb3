"""Watching the tokenizer age: per night, source and level, how far the staged codes drifted from
the tokenizer's training distribution and how well the codes still reconstruct the latents.

Computed by the quality step (:mod:`pipelines.night.quality`) from the staged rows it already
holds cached -- no document is read or embedded again:

* one Spark job counts the codes per (date, source, level, code);
* one Spark job aggregates per (date, source): documents, the share whose codes are all among the
  training "top" codes of their level, and the relative residual norm ``||r^{L+1}|| / ||z||``
  that the inference UDF stored per row (mean, p95).

The driver compares the histograms with the bundle's ``code_stats.json``
(:mod:`u2qt_core.code_stats`): population stability index and Jensen-Shannon divergence (empty
bins floored at ``drift.bin_floor``), utilization (codes used / codes the source may emit there)
and perplexity, and the PSI / JS that sampling noise alone reaches at the night's document count
(:func:`u2qt_core.code_stats.sampling_noise`, at ``drift.noise_quantile``). One row per (date,
source, level) goes to ``token_quality`` (the dates'
partitions are replaced, so a re-run rewrites them).

Gates (``settings.drift``) judge PSI and JS *above their noise* (``psi - psi_noise``): a quiet
night of 150 documents over 256 codes has a raw PSI near 2, a production night near 0, and the
thresholds mean the same on both. Over a ``warn_*`` threshold a warning is logged and sent through
``airflow.alert_callback``; over a ``fail_*`` threshold the night is NOT stopped (its tokens are the
promoted version's, whatever the world did) but the version is marked due for retraining: the
registry tag ``retrain_due`` and a ``drift`` row with status ``retrain_due`` in ``run_metrics``.
A source with fewer than ``drift.min_documents`` documents that night is measured, not judged.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipelines.lake import tables
from pipelines.lake.lake import Lake
from pipelines.night.day_run import DayRun
from pipelines.runtime.local_rows import rows_frame
from u2qt_core.code_stats import SamplingNoise, js_divergence, perplexity, psi, sampling_noise

log = logging.getLogger(__name__)

OK, WARN, RETRAIN = "ok", "warn", "retrain_due"


@dataclass
class DriftVerdict:
    """One date's judgement: the lines over a warn threshold and over a fail threshold."""

    event_date: str
    warnings: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return RETRAIN if self.failures else WARN if self.warnings else OK


def training_stats(run: DayRun) -> dict | None:
    """The bundle's training code statistics (None: a bundle without them, or no bundle)."""
    from u2qt_core.bundle import read_code_stats

    return read_code_stats(run.tokenizer.model_dir) if run.tokenizer.model_dir else None


def fidelity_reference(run: DayRun, stats: dict | None) -> dict[str, float]:
    """Per source, the relative residual a night's is compared with: the held-out days' of
    ``u2qt evaluate`` (registry tag) when the version was evaluated, else the training sample's.
    The training sample's own residual is in-sample: a model that nearly memorises a small sample
    rebuilds every unseen day 3-4x worse (seen on the demo's held-out day), which is not drift."""
    from pipelines.tokenizer import registry

    reference = {s: v["residual_mean"] for s, v in (stats or {}).get("sources", {}).items()}
    try:
        heldout = registry.heldout_residual(registry.find(run.settings, run.tokenizer.version).tags)
    except Exception as exc:  # noqa: BLE001 -- a registry out of reach falls back to training's, named in the log
        log.warning("tokenizer %s: held-out residual not read from the registry (%s): fidelity judged against "
                    "the training sample's", run.tokenizer.version, exc)
        heldout = {}
    return {**reference, **heldout}


def _all_top(stats: dict | None, levels: int) -> Column:
    """Per staged row: are all its codes among its source's training top codes of their level
    (null when there are no training statistics for its source)."""
    sources = (stats or {}).get("sources", {})
    if not sources:
        return F.lit(None).cast("boolean")
    tops = F.create_map(*[item for source, s in sorted(sources.items()) for item in (
        F.lit(source), F.array(*[F.array(*[F.lit(c) for c in lv["top"]] or [F.lit(None)]).cast("array<int>")
                                 for lv in s["levels"]]))])
    top = tops[F.col("source")]
    return F.when(top.isNull(), F.lit(None)).otherwise(
        F.forall(F.sequence(F.lit(1), F.lit(levels)),
                 lambda i: F.array_contains(F.element_at(top, i), F.element_at("codes", i).cast("int"))))


def night_statistics(run: DayRun, staged: DataFrame, stats: dict | None) -> tuple[list, list]:
    """The two Spark jobs over ``staged`` (well-formed rows of one or many dates, cached by the
    caller): ``(histogram rows (event_date, source, level0, code, n), per-source rows)``."""
    L = run.tokenizer.num_levels
    hist = (staged.select("event_date", "source", F.posexplode("codes").alias("level0", "code"))
            .groupBy("event_date", "source", "level0", "code").count().collect())
    per_source = staged.groupBy("event_date", "source").agg(
        F.count(F.lit(1)).alias("documents"),
        F.avg(_all_top(stats, L).cast("double")).alias("top_code_share"),
        F.avg("residual").alias("residual_mean"),
        F.percentile_approx("residual", 0.95, 1000).alias("residual_p95"),
    ).collect()
    return hist, per_source


def token_quality_rows(run: DayRun, hist: list, per_source: list, stats: dict | None,
                       reference: dict[str, float]) -> dict[str, list[dict]]:
    """``{event_date: [row of token_quality]}`` from :func:`night_statistics`' output, the
    training ``stats`` (PSI / JS / training columns null without them) and the fidelity
    ``reference`` per source (:func:`fidelity_reference`)."""
    floor = run.settings.drift.bin_floor
    counts: dict[tuple[str, str, int], dict[int, int]] = {}
    for r in hist:
        counts.setdefault((str(r["event_date"]), r["source"], int(r["level0"]) + 1), {})[int(r["code"])] = int(r["count"])
    by_source = {(str(r["event_date"]), r["source"]): r for r in per_source}
    trained = (stats or {}).get("sources", {})
    out: dict[str, list[dict]] = {}
    for (d, source, level), night in sorted(counts.items()):
        s = by_source[(d, source)]
        train_source = trained.get(source)
        train_level = train_source["levels"][level - 1] if train_source else None
        train_counts = {int(k): v for k, v in train_level["counts"].items()} if train_level else None
        allowed = train_level["allowed"] if train_level else None
        noise = (_noise(run, (source, level), train_counts, int(s["documents"]), allowed)
                 if train_counts else SamplingNoise(None, None))
        out.setdefault(d, []).append({
            "event_date": date.fromisoformat(d), "source": source, "level": level,
            "documents": int(s["documents"]), "codes_used": len(night), "codes_allowed": allowed,
            "utilization": len(night) / allowed if allowed else None,
            "perplexity": perplexity(night),
            "train_perplexity": perplexity(train_counts) if train_counts else None,
            "psi": psi(train_counts, night, floor) if train_counts else None,
            "js": js_divergence(train_counts, night, floor) if train_counts else None,
            "psi_noise": noise.psi, "js_noise": noise.js,
            "top_code_share": _float(s["top_code_share"]),
            "train_top_code_share": train_source["top_code_share"] if train_source else None,
            "residual_mean": _float(s["residual_mean"]), "residual_p95": _float(s["residual_p95"]),
            "train_residual_mean": train_source["residual_mean"] if train_source else None,
            "reference_residual_mean": reference.get(source),
            "tokenizer_version": run.tokenizer.version,
        })
    return out


_NOISE: dict[tuple, SamplingNoise] = {}


def _noise(run: DayRun, key: tuple[str, int], train_counts: dict[int, int], documents: int,
           allowed: int | None) -> SamplingNoise:
    """:func:`sampling_noise` of one source and level at ``documents`` rounded DOWN to two
    significant digits (fewer documents, more noise: the rounding only errs towards calm), memoised
    per tokenizer version: a backfill of hundreds of dates simulates a few dozen times."""
    gates = run.settings.drift
    if not gates.noise_quantile:
        return SamplingNoise(0.0, 0.0)
    step = 10 ** max(len(str(documents)) - 2, 0)
    rounded = max(documents // step * step, 1)
    memo = (run.tokenizer.version, *key, rounded, allowed, gates.bin_floor, gates.noise_quantile)
    if memo not in _NOISE:
        if len(_NOISE) > 4096:          # a long-lived scheduler process: keep the memo bounded
            _NOISE.clear()
        _NOISE[memo] = sampling_noise(train_counts, rounded, allowed, gates.bin_floor, gates.noise_quantile)
    return _NOISE[memo]


def excess(row: dict, name: str) -> float | None:
    """A row's ``psi`` or ``js`` above its sampling noise (what the gates judge; None without
    training statistics)."""
    value, noise = row[name], row.get(f"{name}_noise")
    return None if value is None else value - (noise or 0.0)


def _float(value) -> float | None:
    return None if value is None else float(value)


def judge(run: DayRun, rows: list[dict]) -> DriftVerdict:
    """The date's rows against ``settings.drift``; sets each row's ``drift_status``."""
    gates = run.settings.drift
    verdict = DriftVerdict(run.event_date)
    for row in rows:
        lines: dict[str, list[str]] = {WARN: [], RETRAIN: []}
        judged = gates.judged_levels == "all" or row["level"] <= max(run.tokenizer.shared_prefix_levels, 1)
        row["psi_judged"] = judged and row["documents"] >= gates.min_documents
        if row["documents"] >= gates.min_documents:
            where = f"{row['source']} level {row['level']}"
            for name in ("psi", "js") if judged else ():
                if (value := excess(row, name)) is not None:
                    _check(lines, f"{where}: {name.upper()} {row[name]:.4f} is {value:.4f} above its sampling noise "
                           f"{row[name + '_noise']:.4f} ({row['documents']} documents)", value,
                           getattr(gates, f"warn_{name}"), getattr(gates, f"fail_{name}"), name)
            if row["level"] == 1 and row["residual_mean"] is not None and row["reference_residual_mean"]:
                ratio = row["residual_mean"] / row["reference_residual_mean"]
                _check(lines, f"{row['source']}: relative residual {row['residual_mean']:.4f} is {ratio:.2f}x the reference's "
                       f"{row['reference_residual_mean']:.4f}",
                       ratio, gates.warn_residual_ratio, gates.fail_residual_ratio, "residual_ratio")
        verdict.warnings += lines[WARN]
        verdict.failures += lines[RETRAIN]
        row["drift_status"] = RETRAIN if lines[RETRAIN] else WARN if lines[WARN] else OK
    return verdict


def _check(lines: dict[str, list[str]], text: str, value: float, warn: float, fail: float, name: str) -> None:
    if value > fail:
        lines[RETRAIN].append(f"{text} > fail_{name} {fail}")
    elif value > warn:
        lines[WARN].append(f"{text} > warn_{name} {warn}")


def write_token_quality(runs: list[DayRun], rows: dict[str, list[dict]]) -> None:
    """Replace the dates' partitions of ``token_quality`` with ``rows`` (one commit)."""
    from pipelines.night.day_run import dates_predicate

    run = runs[0]
    run_ids = {r.event_date: r.run_id for r in runs}
    spec = tables.TOKEN_QUALITY
    names = [f.name for f in spec.schema.fields]
    data = [tuple({**row, "run_id": run_ids[d]}[n] for n in names) for d in sorted(rows) for row in rows[d]]
    frame = rows_frame(run.spark, data, spec.schema)
    run.replace_partition(frame, spec, dates_predicate([r.event_date for r in runs]))


def send_alert(run: DayRun, verdict: DriftVerdict) -> None:
    """Log the verdict and hand it to ``airflow.alert_callback`` (when one is configured) as a
    context dict: ``u2qt_event = "tokenizer_drift"``, ``severity`` (``warn`` / ``retrain_due``),
    ``message``, ``ds``, ``run_id``, ``tokenizer_version``, ``lines``. An alert that fails is
    logged; it never fails the night."""
    lines = verdict.failures + verdict.warnings
    message = (f"{run.event_date}: tokenizer {run.tokenizer.version} "
               f"{'is due for retraining' if verdict.failures else 'drifts'}: " + "; ".join(lines))
    log.warning("%s", message)
    spec = run.settings.airflow.alert_callback
    if not spec:
        return
    try:
        from pipelines.runtime.alerts import resolve_callback

        resolve_callback(spec)({"u2qt_event": "tokenizer_drift", "severity": verdict.status, "message": message,
                                "ds": run.event_date, "run_id": run.run_id, "tokenizer_version": run.tokenizer.version,
                                "lines": lines})
    except Exception:  # noqa: BLE001 -- an alert hook must not fail the night
        log.exception("alert_callback %s failed on the drift alert of %s", spec, run.event_date)


def act(runs: list[DayRun], rows: dict[str, list[dict]]) -> dict[str, dict]:
    """Judge every date, alert, mark the version due for retraining on a failure; returns
    ``{event_date: summary}`` (``status``, the lines, the largest PSI / JS, the mean residual per
    source): the caller records it as the date's ``drift`` row of ``run_metrics``."""
    from pipelines.tokenizer import registry

    out = {}
    for run in runs:
        day_rows = rows.get(run.event_date, [])
        verdict = judge(run, day_rows)
        if verdict.warnings or verdict.failures:
            send_alert(run, verdict)
        if verdict.failures:
            try:
                registry.mark_retrain_due(run.settings, run.tokenizer.version, run.event_date, verdict.failures)
            except Exception:  # noqa: BLE001 -- the run_metrics row below still says so
                log.exception("could not tag tokenizer %s as due for retraining", run.tokenizer.version)
        out[run.event_date] = {"status": verdict.status, "warnings": verdict.warnings, "failures": verdict.failures, "retrain_due": bool(verdict.failures),
                                "max_psi": max((r["psi"] for r in day_rows if r["psi"] is not None), default=None),
                                "max_js": max((r["js"] for r in day_rows if r["js"] is not None), default=None),
                                "max_psi_over_noise": max((excess(r, "psi") for r in day_rows if r["psi"] is not None), default=None),
                                "residual_mean": {r["source"]: r["residual_mean"] for r in day_rows if r["level"] == 1}}
    return out


def measure(runs: list[DayRun], staged: DataFrame) -> dict[str, dict]:
    """Everything above for the dates of ``runs`` on their cached well-formed ``staged`` rows:
    writes ``token_quality``, alerts, tags; returns :func:`act`'s summary per date."""
    run = runs[0]
    stats = training_stats(run)
    if stats is None:
        log.warning("tokenizer %s has no training code statistics (bundle written before they were kept): "
                    "token_quality holds utilization and fidelity, no drift", run.tokenizer.version)
    hist, per_source = night_statistics(run, staged, stats)
    rows = token_quality_rows(run, hist, per_source, stats, fidelity_reference(run, stats))
    summaries = act(runs, rows)      # sets drift_status on every row before they are written
    write_token_quality(runs, rows)
    return summaries


def newly_due(spark, settings, event_date: str, run_id: str | None) -> dict:
    """Whether the night ``run_id`` of ``event_date`` marked its tokenizer due for retraining and
    is the first night to mark that version (what emits the retrain Asset in ``u2qt_daily``):
    ``{"retrain_due", "first", "tokenizer_version"}`` read from ``run_metrics``' ``drift`` rows."""
    frame = Lake(spark, settings).read(tables.RUN_METRICS.name).where(F.col("step") == "drift")
    mine = frame.where(F.col("event_date") == F.lit(event_date).cast("date"))
    if run_id:
        mine = mine.where(F.col("run_id") == run_id)
    last = mine.orderBy(F.col("recorded_at").desc()).limit(1).collect()
    if not last or last[0]["status"] != RETRAIN:
        return {"retrain_due": False, "first": False, "tokenizer_version": last[0]["tokenizer_version"] if last else None}
    version = last[0]["tokenizer_version"]
    earlier = (frame.where((F.col("tokenizer_version") == version) & (F.col("status") == RETRAIN)
                           & (F.col("event_date") < F.lit(event_date).cast("date"))).limit(1).count())
    return {"retrain_due": True, "first": earlier == 0, "tokenizer_version": version}
