"""The registry of tokenizer versions: MLflow's model registry.

* store: ``registry.tracking_uri``; empty (the default) is an embedded SQLite file,
  ``sqlite:///<model_dir>/registry.db``; a deployment points it at an MLflow tracking server;
* one registered model (``registry.model_name``); each model version is one tokenizer bundle
  (its ``source`` is the bundle folder, its tag ``tokenizer_version`` the content hash) and
  links to the MLflow run holding its training metrics, and later its evaluation gates;
* the alias ``registry.alias`` (``champion``) names the promoted version: the nightly job
  resolves it once at its start (:func:`resolve`), so a promotion during a night changes nothing
  for that night; :func:`promote` moves it only when the evaluation gates passed (or ``force``,
  which is recorded on the version).

There is one way to find the tokenizer a night uses: the alias. No fallback to a folder.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from pipelines.config.settings import PipelineSettings
from pipelines.errors import RegistryError, PromotionRefused

log = logging.getLogger(__name__)

VERSION_TAG = "tokenizer_version"
GATES_TAG = "gates_json"
PASSED_TAG = "gates_passed"
FORCED_TAG = "forced_promotion"
PATHS_TAG = "numeric_paths_json"   # measured agreement of other numeric paths, by path label
RETRAIN_DUE_TAG = "retrain_due"          # set by a night whose drift crossed a fail threshold
RETRAIN_SINCE_TAG = "retrain_due_since"  # the first such night's date
HELDOUT_RESIDUAL_TAG = "heldout_residual_json"   # per source: mean ||r|| / ||z|| on the held-out days (evaluate)
RETRAIN_OF_TAG = "retrain_of"            # on a version trained while the champion was due: which, since when


@dataclass(frozen=True)
class RegisteredVersion:
    """One tokenizer version in the registry."""

    tokenizer_version: str
    registry_version: str        # MLflow's model version number
    bundle: str                  # the bundle folder
    run_id: str
    tags: dict[str, str]


def tracking_uri(settings: PipelineSettings) -> str:
    """The configured store, or the embedded SQLite file under ``model_dir``."""
    if settings.registry.tracking_uri:
        return settings.registry.tracking_uri
    model_dir = Path(settings.model_dir).expanduser().absolute()
    model_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{model_dir / 'registry.db'}"


@lru_cache(maxsize=8)
def _client(uri: str):
    for noisy in ("alembic", "mlflow.store.db.utils"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def client(settings: PipelineSettings):
    """The MLflow client of this pipeline's registry (one per store and process)."""
    return _client(tracking_uri(settings))


def _ensure_model(settings: PipelineSettings) -> str:
    from mlflow.exceptions import MlflowException

    mlflow, name = client(settings), settings.registry.model_name
    try:
        mlflow.get_registered_model(name)
    except MlflowException:
        mlflow.create_registered_model(name, description="u2qt tokenizer bundles (MRQ-VAE + encoder + input contract)")
    return name


def _experiment_id(settings: PipelineSettings) -> str:
    mlflow, name = client(settings), settings.registry.model_name
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    artifacts = Path(settings.model_dir).expanduser().absolute() / "mlartifacts"   # not ./mlruns of the CWD
    return mlflow.create_experiment(name, artifact_location=artifacts.as_uri())


def _numeric(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def register(settings: PipelineSettings, tokenizer_version: str, bundle: Path, metrics: dict[str, Any],
             params: dict[str, str]) -> RegisteredVersion:
    """Register a trained bundle with its training metrics (an MLflow run) and return it; a
    version registered before (same content) is returned as it is."""
    try:
        return find(settings, tokenizer_version)
    except RegistryError:
        pass
    mlflow, name = client(settings), _ensure_model(settings)
    run = mlflow.create_run(_experiment_id(settings), run_name=f"train {tokenizer_version}",
                            tags={VERSION_TAG: tokenizer_version})
    run_id = run.info.run_id
    for key, value in params.items():
        mlflow.log_param(run_id, key, value)
    stamp = int(time.time() * 1000)
    from mlflow.entities import Metric

    mlflow.log_batch(run_id, metrics=[Metric(f"train.{k}", v, stamp, 0) for k, v in _numeric(metrics).items()])
    mlflow.set_terminated(run_id)
    mv = mlflow.create_model_version(name, source=str(bundle), run_id=run_id, tags={VERSION_TAG: tokenizer_version},
                                     description=f"bundle {bundle}")
    log.info("registered tokenizer %s as %s version %s (%s)", tokenizer_version, name, mv.version, tracking_uri(settings))
    return find(settings, tokenizer_version)


def _as_registered(mv) -> RegisteredVersion:
    return RegisteredVersion(tokenizer_version=mv.tags.get(VERSION_TAG, ""), registry_version=str(mv.version),
                             bundle=mv.source, run_id=mv.run_id or "", tags=dict(mv.tags))


def versions(settings: PipelineSettings) -> list[RegisteredVersion]:
    """Every registered tokenizer version, oldest first."""
    name = settings.registry.model_name
    found = client(settings).search_model_versions(f"name='{name}'")
    return sorted((_as_registered(mv) for mv in found), key=lambda v: int(v.registry_version))


def find(settings: PipelineSettings, tokenizer_version: str) -> RegisteredVersion:
    """The registered ``tokenizer_version`` (``u2qt-...``); one line naming the store if absent."""
    name = settings.registry.model_name
    found = client(settings).search_model_versions(f"name='{name}' and tag.{VERSION_TAG}='{tokenizer_version}'")
    if not found:
        raise RegistryError(f"tokenizer {tokenizer_version} is not registered as {name} in {tracking_uri(settings)} "
                            "(`u2qt train` registers a new version)")
    return _as_registered(found[0])


def record_evaluation(settings: PipelineSettings, version: RegisteredVersion, gates: dict[str, Any], passed: bool,
                      heldout_residual: dict[str, float] | None = None) -> None:
    """Store the gates on the version (tags) and their values on its run (metrics ``eval.*``);
    ``heldout_residual`` (per source, the mean relative residual on the held-out days) becomes
    :data:`HELDOUT_RESIDUAL_TAG`, the reference of the nights' fidelity drift."""
    mlflow, name = client(settings), settings.registry.model_name
    mlflow.set_model_version_tag(name, version.registry_version, GATES_TAG, json.dumps(gates, sort_keys=True, default=str))
    mlflow.set_model_version_tag(name, version.registry_version, PASSED_TAG, "true" if passed else "false")
    if heldout_residual:
        mlflow.set_model_version_tag(name, version.registry_version, HELDOUT_RESIDUAL_TAG,
                                     json.dumps(heldout_residual, sort_keys=True))
    if version.run_id:
        values = {k: v["value"] for k, v in gates.items() if isinstance(v, dict) and isinstance(v.get("value"), (int, float))}
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        mlflow.log_batch(version.run_id, metrics=[Metric(f"eval.{k}", float(v), stamp, 0) for k, v in values.items()])


def path_agreements(tags: dict[str, str]) -> dict[str, dict]:
    """The numeric-path agreements ``u2qt evaluate`` recorded on a version (its ``tags``), by path
    label (``device/precision/runtime``); empty when none was measured."""
    try:
        value = json.loads(tags.get(PATHS_TAG, "{}"))
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def record_path_agreement(settings: PipelineSettings, version: RegisteredVersion, measured: dict[str, dict]) -> None:
    """Store the agreement of each measured numeric path on the version (tag :data:`PATHS_TAG`,
    merged with paths measured before; the bundle itself is immutable) and on its run (metrics
    ``eval.path_agreement.<label>``)."""
    mlflow, name = client(settings), settings.registry.model_name
    current = find(settings, version.tokenizer_version)
    merged = {**path_agreements(current.tags), **measured}
    mlflow.set_model_version_tag(name, version.registry_version, PATHS_TAG, json.dumps(merged, sort_keys=True, default=float))
    if version.run_id and measured:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        mlflow.log_batch(version.run_id, metrics=[
            Metric(f"eval.path_agreement.{label.replace('/', '_')}", float(m["agreement"]), stamp, 0)
            for label, m in measured.items()])


def mark_retrain_due(settings: PipelineSettings, tokenizer_version: str, event_date: str, reasons: list[str]) -> RegisteredVersion:
    """Tag ``tokenizer_version`` as due for retraining (``RETRAIN_DUE_TAG``: the night's date and
    the drift thresholds it crossed, JSON); the first date that marked it is kept in
    ``RETRAIN_SINCE_TAG``. The version stays promoted: the nights keep using it."""
    version = find(settings, tokenizer_version)
    mlflow, name = client(settings), settings.registry.model_name
    note = json.dumps({"event_date": event_date, "reasons": reasons[:20],
                       "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, sort_keys=True)
    mlflow.set_model_version_tag(name, version.registry_version, RETRAIN_DUE_TAG, note)
    if RETRAIN_SINCE_TAG not in version.tags:
        mlflow.set_model_version_tag(name, version.registry_version, RETRAIN_SINCE_TAG, event_date)
    log.warning("tokenizer %s (registry version %s) marked due for retraining on %s", tokenizer_version,
                version.registry_version, event_date)
    return version


def promote(settings: PipelineSettings, tokenizer_version: str, *, force: bool = False, reason: str = "") -> RegisteredVersion:
    """Point the alias at ``tokenizer_version`` if its evaluation passed every gate; ``force``
    overrides a missing or failed evaluation and is recorded on the version."""
    version = find(settings, tokenizer_version)
    passed = version.tags.get(PASSED_TAG)
    if passed != "true" and not force:
        if passed is None:
            raise PromotionRefused(f"tokenizer {tokenizer_version} has not been evaluated: run `u2qt evaluate "
                                   f"{tokenizer_version}` first (or promote --force)")
        gates = json.loads(version.tags.get(GATES_TAG, "{}"))
        failing = [f"{k} = {g.get('value')} (needs {g.get('rule')})" for k, g in gates.items() if not g.get("passed")]
        raise PromotionRefused(f"tokenizer {tokenizer_version} failed its evaluation gates: {'; '.join(failing)} "
                               "(promote --force overrides, recorded)")
    mlflow, name = client(settings), settings.registry.model_name
    if force and passed != "true":
        note = json.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "gates_passed": passed,
                           "reason": reason})
        mlflow.set_model_version_tag(name, version.registry_version, FORCED_TAG, note)
        log.warning("tokenizer %s promoted with --force (gates_passed=%s): recorded on the version", tokenizer_version, passed)
    mlflow.set_registered_model_alias(name, settings.registry.alias, version.registry_version)
    log.info("alias %s of %s -> %s (version %s)", settings.registry.alias, name, tokenizer_version, version.registry_version)
    return version


def heldout_residual(tags: dict[str, str]) -> dict[str, float]:
    """The version's held-out residual per source (empty: never evaluated, or before it was kept)."""
    return {s: float(v) for s, v in json.loads(tags.get(HELDOUT_RESIDUAL_TAG) or "{}").items()}


def record_retraining(settings: PipelineSettings, new: RegisteredVersion) -> dict | None:
    """When the promoted version is due for retraining, tag the just registered ``new`` as the
    retraining that answers it (:data:`RETRAIN_OF_TAG`: ``{"version", "since"}``, what
    ``u2qt report`` draws); returns that note, or None when no champion is due (or none is promoted)."""
    try:
        champion = resolve(settings)
    except RegistryError:
        return None
    since = champion.tags.get(RETRAIN_SINCE_TAG)
    if not since or champion.tokenizer_version == new.tokenizer_version:
        return None
    note = {"version": champion.tokenizer_version, "since": since}
    client(settings).set_model_version_tag(settings.registry.model_name, new.registry_version, RETRAIN_OF_TAG,
                                           json.dumps(note))
    log.info("tokenizer %s is the retraining of %s (due since %s)", new.tokenizer_version, champion.tokenizer_version, since)
    return note


def resolve(settings: PipelineSettings) -> RegisteredVersion:
    """The version the alias names now (what a night starting now uses)."""
    from mlflow.exceptions import MlflowException

    name, alias = settings.registry.model_name, settings.registry.alias
    try:
        mv = client(settings).get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        raise RegistryError(f"no tokenizer is promoted as {name}@{alias} in {tracking_uri(settings)}: run `u2qt train`, "
                            "`u2qt evaluate VERSION`, `u2qt promote VERSION`") from exc
    return _as_registered(mv)
