"""``u2qt evaluate VERSION``: the gates a registered tokenizer version must pass before
``u2qt promote`` may point the registry alias at it.

On the held-out days (the last ``gates.heldout_days`` dates of ``raw_events``, which ``u2qt
train`` leaves out) every valid input is embedded in Spark (the nightly UDF's encoder) and
tokenized with the version's bundle on the driver; then:

* ``reconstruction_error``: relative squared error of the decoders, sum ||x - x_hat||^2 over
  sum ||x||^2, text sources pooled (<= ``max_reconstruction_error``);
* ``min_level_utilization``: the lowest share of codes used at any codebook level, over the most
  that could be used: the level's codes, or its rows when fewer (>= ...; a held-out set of 7
  users cannot use 5 % of 256 codes, and that says nothing about the tokenizer);
* ``min_shared_coverage``: the lowest, over sources and shared levels, of the codes of the level a
  source uses over the most it could (``K``, or its rows when fewer): a source squeezed onto a few
  shared codes by another (the tabular source taking a level over) fails (>= ...);
* ``collision_rate``: per day, the share of users whose full token tuple (every source in token
  order, -1 for a source without a document) is shared with another user; the worst day counts
  (<= ``max_collision_rate``, the paper reports under 0.5 %);
* ``probe_auc``: a linear probe on the users' bag of codes for ``user_labels`` task
  ``probe_task`` on a seeded stratified split, with a 95 % bootstrap interval over the test users
  (``probe_bootstrap`` resamples). It fails only when the whole interval lies below
  ``min_probe_auc``, passes when the whole interval lies at or above it, and is skipped (passing,
  with a note) when the interval holds the bar: the held-out set is too small to decide. Also
  skipped when the table, the task or enough users of both classes are missing.

Then, for each path of ``gates.validate_paths`` (numeric paths besides the bundle's own:
:mod:`pipelines.tokenizer.path_agreement`), the agreement of its codes with the bundle's path on
a sample of held-out documents; it is recorded on the version, not a gate: a night on such a
path runs when the agreement is >= ``gates.min_path_agreement``
(:mod:`pipelines.night.numeric_path`). The gates themselves are computed on the bundle's path.

The gates and their values are stored on the registry version (:func:`pipelines.tokenizer.registry.record_evaluation`).
"""
from __future__ import annotations

import logging
import time

import numpy as np
from pyspark.sql import SparkSession

from pipelines.tokenizer import registry

from pipelines.lake import tables
from pipelines.lake.lake import Lake
from pipelines.night.inference import inference_spec, make_embed_udf
from pipelines.runtime.progress import spark_progress
from pipelines.config.settings import PipelineSettings
from pipelines.tokenizer.sample import sample_inputs
from pipelines.tokenizer.train_job import heldout_dates
from u2qt_core.numeric_path import NumericPath, parse_path, path_from_dict

log = logging.getLogger(__name__)

MIN_PROBE_CLASS = 4   # users of each class needed before the probe means anything


def _gate(value: float | None, rule: str, passed: bool) -> dict:
    return {"value": value, "rule": rule, "passed": bool(passed)}


def _embedded_rows(spark: SparkSession, settings: PipelineSettings, dates: list[str], model,
                   path: NumericPath | None):
    """The MRQ-VAE inputs of every held-out (user, source, day): ``user_id, event_date, source, x``
    rows ordered by source, date and user (a U²QT-AAAI tokenizer's: its front end's pooled vectors)."""
    inputs = sample_inputs(spark, settings, start_date=dates[0], end_date=dates[-1], max_per_source=0)
    if hasattr(model, "frontend"):
        from pipelines.tokenizer.u2qt_sample import pooled_rows

        return pooled_rows(spark, settings, inputs, model, path)
    tabular = tuple(model.config.tabular_sources)
    embed = make_embed_udf(inference_spec(settings, tabular_sources=tabular, numeric_path=path))
    with spark_progress(spark, "embed the held-out days"):
        return (inputs.repartition(settings.inference.partitions, "user_id")
                .select("user_id", "event_date", "source", embed("user_id", "event_date", "source", "document", "features").alias("x"))
                .orderBy("source", "event_date", "user_id").collect())


def _probe(spark: SparkSession, settings: PipelineSettings, bags: dict[int, np.ndarray]) -> dict:
    from u2qt_core.evaluation.probes import probe_tasks, split_users

    rule = f">= {settings.gates.min_probe_auc}"
    if settings.gates.probe_task is None:
        return {**_gate(None, rule, True), "skipped": "no gates.probe_task configured"}
    lake = Lake(spark, settings)
    if not lake.exists(tables.USER_LABELS.name):
        return {**_gate(None, rule, True), "skipped": f"no user_labels table at {lake.path(tables.USER_LABELS.name)}"}
    rows = (lake.read(tables.USER_LABELS.name).where(f"task = '{settings.gates.probe_task}'")
            .select("user_id", "label").collect())
    labels = {int(r["user_id"]): int(r["label"]) for r in rows if int(r["user_id"]) in bags}
    counts = np.bincount(np.array(list(labels.values()) or [0], dtype=np.int64), minlength=2)
    if len(labels) == 0 or counts.min() < MIN_PROBE_CLASS:
        return {**_gate(None, rule, True),
                "skipped": f"task {settings.gates.probe_task!r}: {counts.tolist()} held-out users per class "
                           f"(needs {MIN_PROBE_CLASS} of each)"}
    users = sorted(labels)
    x = np.stack([bags[u] for u in users])
    y = np.array([labels[u] for u in users])
    task = settings.gates.probe_task
    probe = probe_tasks(x, {task: y}, {task: split_users(y, 0.3, 0)}, c_grid=[1.0], seed=0,
                        bootstrap=settings.gates.probe_bootstrap)["tasks"][task]
    return {**probe_gate(probe["auc"], probe.get("auc_ci"), settings.gates.min_probe_auc, probe["n_test"]),
            "users": len(users)}


def probe_gate(auc: float, interval: list[float] | None, bar: float, test_users: int) -> dict:
    """The probe gate from its AUC and 95 % interval ``[low, high]`` (None: the AUC alone): fails
    when the whole interval is below ``bar``, passes when it is all at or above, and is skipped
    (passing, with a note) when it holds ``bar``, i.e. the held-out set cannot decide."""
    low, high = interval if interval is not None else (auc, auc)
    gate = {**_gate(auc, f">= {bar}", high >= bar), "test_users": test_users, "auc_ci": [low, high]}
    if low < bar <= high:
        gate["skipped"] = (f"held-out set too small to decide: AUC {auc:.3f}, 95 % interval [{low:.3f}, {high:.3f}] "
                           f"over {test_users} test users holds the bar {bar}")
    return gate


def evaluate(spark: SparkSession, settings: PipelineSettings, tokenizer_version: str) -> dict:
    """Compute and record the gates of ``tokenizer_version``; returns ``{"passed", "gates", ...}``."""
    import torch

    from u2qt_core.bundle import load_bundle
    from u2qt_core.collisions import collision_rate
    from u2qt_core.metrics import codebook_metrics

    started = time.monotonic()
    entry = registry.find(settings, tokenizer_version)
    model, version, contract = load_bundle(entry.bundle)
    quantizer = getattr(model, "mrqvae", model)   # a U²QT-AAAI tokenizer: the gates read its MRQ-VAE
    cfg, gates = quantizer.config, settings.gates
    trained = path_from_dict(contract.get("numeric_path"))     # None: a bundle from before paths were recorded
    dates = heldout_dates(spark, settings)
    rows = _embedded_rows(spark, settings, dates, model, trained)
    by_source: dict[str, list] = {}
    for row in rows:
        by_source.setdefault(row["source"], []).append(row)
    inputs = {s: np.asarray([r["x"] for r in rs], dtype=np.float32) for s, rs in by_source.items()}
    health = codebook_metrics(quantizer, inputs)
    text = [s for s in inputs if s not in cfg.tabular_sources]
    sq_err = sum(health["per_source"][s]["recon_mse"] * inputs[s].size for s in text)
    energy = sum(float((inputs[s].astype(np.float64) ** 2).sum()) for s in text)
    recon = sq_err / energy if energy else 0.0

    L, K, order = cfg.num_levels, cfg.num_codes, list(cfg.sources)
    tuples: dict[tuple[str, int], np.ndarray] = {}
    bags: dict[int, np.ndarray] = {}
    residual: dict[str, float] = {}       # held-out fidelity: what the nights' residual_ratio is judged against
    with torch.no_grad():
        for source, source_rows in by_source.items():
            codes, rel = quantizer.quantize_measured(torch.from_numpy(inputs[source]), source)
            codes, residual[source] = codes.cpu().numpy().astype(np.int64), float(rel.mean())
            k = order.index(source)
            for row, code in zip(source_rows, codes):
                key = (str(row["event_date"]), int(row["user_id"]))
                tuples.setdefault(key, np.full(len(order) * L, -1, dtype=np.int64))[k * L:(k + 1) * L] = code
                bag = bags.setdefault(key[1], np.zeros(len(order) * L * K, dtype=np.float32))
                bag[(k * L + np.arange(L)) * K + np.minimum(code, K - 1)] += 1.0
    per_day = {d: collision_rate(np.stack([t for (day, _), t in tuples.items() if day == d]))
               for d in dates if any(day == d for day, _ in tuples)}
    worst = max(per_day.values()) if per_day else 0.0
    utilization = min(level["row_bounded_utilization"] for level in health["per_level"])
    coverage = {s: entry["shared_coverage"] for s, entry in health["per_source"].items() if entry["shared_coverage"]}
    lowest = min((c for levels in coverage.values() for c in levels.values()), default=1.0)
    result = {
        "reconstruction_error": _gate(recon, f"<= {gates.max_reconstruction_error}", recon <= gates.max_reconstruction_error),
        "min_level_utilization": _gate(utilization, f">= {gates.min_level_utilization}",
                                       utilization >= gates.min_level_utilization),
        "min_shared_coverage": {**_gate(lowest, f">= {gates.min_shared_coverage}", lowest >= gates.min_shared_coverage),
                                "per_source": coverage},
        "collision_rate": {**_gate(worst, f"<= {gates.max_collision_rate}", worst <= gates.max_collision_rate),
                           "per_day": per_day},
        "probe_auc": _probe(spark, settings, bags),
    }
    passed = all(g["passed"] for g in result.values())
    registry.record_evaluation(settings, entry, result, passed, heldout_residual=residual)
    paths = _validate_paths(spark, settings, model, version, trained, dates, entry)
    log.info("evaluated %s on %s: %s (%.0f s)", version, dates, "PASSED" if passed else "FAILED", time.monotonic() - started)
    return {"tokenizer_version": version, "registry_version": entry.registry_version, "heldout_dates": dates,
            "rows": {s: len(rs) for s, rs in by_source.items()}, "passed": passed, "gates": result,
            "heldout_residual": residual,
            "numeric_path": trained.label if trained else None, "numeric_paths": paths}


def _validate_paths(spark: SparkSession, settings: PipelineSettings, model, version: str, trained: NumericPath | None,
                    dates: list[str], entry: registry.RegisteredVersion) -> dict[str, dict]:
    """Measure and record the agreement of ``gates.validate_paths`` with the bundle's path, each
    marked ``accepted`` against ``gates.min_path_agreement`` (the night compares it again with its
    own setting)."""
    from pipelines.tokenizer.path_agreement import measure_paths

    wanted = [parse_path(p) for p in settings.gates.validate_paths]
    if not wanted:
        return {}
    if hasattr(model, "frontend"):
        log.warning("tokenizer %s is a U²QT-AAAI tokenizer: gates.validate_paths %s not measured (FOUNDv2 only); "
                    "its nights run on its training path only", version, settings.gates.validate_paths)
        return {}
    if trained is None:
        log.warning("tokenizer %s records no numeric path: gates.validate_paths %s not measured", version,
                    settings.gates.validate_paths)
        return {}
    measured = measure_paths(spark, settings, model, version, trained, wanted, dates)
    bar = settings.gates.min_path_agreement
    for figures in measured.values():
        figures.update(min_path_agreement=bar, accepted=figures["agreement"] >= bar)
    registry.record_path_agreement(settings, entry, measured)
    return measured
