"""Validated configuration of the pipeline: ``conf/pipeline.yaml`` and ``conf/sources.yaml``."""
from __future__ import annotations

import math
from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipelines.config.config_loading import CONF_DIR, is_url, load_model, load_raw
from u2qt_core.config import SourceLayout
from u2qt_core.config_loader import KeyProblem, deep_merge, validate_model
from u2qt_core.encoders.text_config import TextEncoderConfig
from u2qt_core.errors import U2QTError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextSource(_Strict):
    label: str
    instruction: str


class DocumentConfig(_Strict):
    max_lines: int = Field(32, ge=1)
    line_separator: str = " [*] "
    count_format: str = "{text}, {count}x"
    # True: a line seen once carries its count too (", 1x"), the format of bundles trained before
    # this setting existed; False: only lines that repeat do
    count_single_lines: bool = False

    @model_validator(mode="after")
    def _format_has_fields(self) -> "DocumentConfig":
        try:
            self.count_format.format(text="x", count=1)
        except (KeyError, IndexError) as exc:
            raise ValueError(f"count_format may only use {{text}} and {{count}}: {exc}") from exc
        return self


class TabularFeature(_Strict):
    column: str
    transform: Literal["scale", "log1p_scale", "onehot", "bool"]
    divisor: float | None = None
    values: list[str] | None = None
    # numeric features: the valid [min, max] of the raw column; a profile outside it is quarantined
    range: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _args_match_transform(self) -> "TabularFeature":
        numeric = self.transform in ("scale", "log1p_scale")
        if numeric and not self.divisor:
            raise ValueError(f"feature {self.column!r}: transform {self.transform} needs a non-zero divisor")
        if self.transform == "onehot" and not self.values:
            raise ValueError(f"feature {self.column!r}: transform onehot needs a non-empty values list")
        if self.range is not None and not numeric:
            raise ValueError(f"feature {self.column!r}: range applies to scale/log1p_scale features only")
        if self.range is not None and not (math.isfinite(self.range[0]) and math.isfinite(self.range[1])
                                           and self.range[0] <= self.range[1]):
            raise ValueError(f"feature {self.column!r}: range must be [min, max] of finite numbers, min <= max")
        return self

    @property
    def width(self) -> int:
        return len(self.values) if self.transform == "onehot" else 1


class TabularConfig(_Strict):
    name: str = "tabular"
    features: list[TabularFeature]

    @property
    def width(self) -> int:
        """Length of the tabular feature vector fed to the tabular MLP."""
        return sum(feature.width for feature in self.features)


class SourcesConfig(_Strict):
    text_sources: dict[str, TextSource]
    document: DocumentConfig = DocumentConfig()
    tabular: TabularConfig
    # U²QT-AAAI only: the sources whose sequences each source's Q-Former queries also read (the
    # paper's behaviour stream V reads search R); a source not listed reads only itself
    context_sources: dict[str, list[str]] = {}

    @model_validator(mode="after")
    def _context_names_sources(self) -> "SourcesConfig":
        known = self.all_sources
        for source, context in self.context_sources.items():
            for name in [source, *context]:
                if name not in known:
                    raise ValueError(f"context_sources.{source}: {name!r} is not a source ({known})")
            if source in context:
                raise ValueError(f"context_sources.{source}: a source reads itself already; list only others")
        return self

    @property
    def all_sources(self) -> list[str]:
        """Token order: the text sources as listed, then the tabular source."""
        return [*self.text_sources, self.tabular.name]

    def layout(self, encoder_dim: int) -> SourceLayout:
        """The tokenizer's sources and input widths (text: the encoder's width; tabular: the
        feature vector's), what :func:`u2qt_core.config.load_model_preset` adds to a preset."""
        dims = {name: encoder_dim for name in self.text_sources} | {self.tabular.name: self.tabular.width}
        return SourceLayout(self.all_sources, dims, [self.tabular.name], encoder_dim,
                            {s: list(c) for s, c in self.context_sources.items()})


class InferenceConfig(_Strict):
    partitions: int = Field(4, ge=1)
    batch_rows: int = Field(4096, ge=1)   # most rows under one length sort inside the UDF
    torch_threads: int = Field(1, ge=0)   # per Python worker; 0 = torch's default
    # one encoder+quantizer row per distinct (source, document) of the pass, codes joined back to
    # every (user, source, date) holding that document (pipelines/night/dedup.py)
    dedup_documents: bool = True


class ValidationConfig(_Strict):
    """Row checks of the night's ``raw_events`` beyond the schema (see ``pipelines/night/validation.py``)."""

    max_text_chars: int = Field(2000, ge=1)                    # longer event texts are quarantined
    amount_range: tuple[float, float] = (-1.0e7, 1.0e7)        # finite [min, max] of raw_events.amount

    @model_validator(mode="after")
    def _range_is_finite(self) -> "ValidationConfig":
        low, high = self.amount_range
        if not (math.isfinite(low) and math.isfinite(high) and low <= high):
            raise KeyProblem("amount_range", f"must be [min, max] of finite numbers with min <= max, got {[low, high]}")
        return self


class InputsConfig(_Strict):
    """How ``u2qt check-inputs``, ``u2qt features`` and ``u2qt train-sequence`` judge the windows
    over days (``features.window_days``, ``sequence_encoder.history_days``, ``history.max_days``)
    against the data's cadence (:mod:`pipelines.night.cadence`)."""

    # a window that holds under this share of the users active in the data is warned about
    min_window_user_share: float = Field(0.9, gt=0, le=1)


class StagingConfig(_Strict):
    # staged rows of a published date are deleted this many days after it (0: at its publish)
    keep_days: int = Field(0, ge=0)


class QualityGates(_Strict):
    min_active_users: int = Field(1, ge=0)
    max_quarantine_rate: float = Field(0.05, ge=0, le=1)
    max_collision_rate: float = Field(0.005, ge=0, le=1)   # FOUNDv2 reports < 0.5 %
    min_level_utilization: float = Field(0.0, ge=0, le=1)
    max_null_code_rate: float = Field(0.0, ge=0, le=1)
    # a warning (not a gate) when more of a source's documents are truncated by encoder.max_length
    warn_truncated_share: float = Field(0.05, ge=0, le=1)


class DriftGates(_Strict):
    """How far a night's codes may move from the tokenizer's training distribution
    (:mod:`pipelines.night.drift`). Over a ``warn_*`` value: a warning, logged and sent through
    ``airflow.alert_callback``. Over a ``fail_*`` value: the night still publishes (its tokens are
    the promoted version's) but the version is marked due for retraining (a registry tag and a
    ``drift`` row in ``run_metrics``)."""

    warn_psi: float = Field(0.1, gt=0)        # population stability index, per source and level
    fail_psi: float = Field(0.25, gt=0)
    warn_js: float = Field(0.05, gt=0, le=1)  # Jensen-Shannon divergence (base 2, in [0, 1])
    fail_js: float = Field(0.15, gt=0, le=1)
    # mean relative residual norm of a source over its training mean (fidelity lost)
    warn_residual_ratio: float = Field(1.25, gt=1)
    fail_residual_ratio: float = Field(1.5, gt=1)
    min_documents: int = Field(20, ge=1)      # a source with fewer documents that night is not judged
    top_mass: float = Field(0.9, gt=0, le=1)  # "top codes": the most frequent covering this training mass
    bin_floor: float = Field(1e-4, gt=0, lt=0.01)   # probability floor of an empty bin (PSI's log)
    # PSI / JS are judged above what sampling alone reaches at this quantile for the night's document
    # count (u2qt_core.code_stats.sampling_noise); 0 judges the raw values
    noise_quantile: float = Field(0.99, ge=0, lt=1)
    # which levels' PSI / JS the gates judge (all are measured): "shared", the leading shared levels
    # (level 1 when there are none); "all" adds the source-specific ones, whose deepest level holds
    # per-document detail that a small training sample memorises (the demo's unseen quiet day: PSI 3-6)
    judged_levels: Literal["shared", "all"] = "shared"

    @model_validator(mode="after")
    def _warn_below_fail(self) -> "DriftGates":
        for name in ("psi", "js", "residual_ratio"):
            warn, fail = getattr(self, f"warn_{name}"), getattr(self, f"fail_{name}")
            if warn > fail:
                raise KeyProblem(f"warn_{name}", f"{warn} is above fail_{name} {fail}")
        return self


class ConcurrencyConfig(_Strict):
    """How runs of several dates share the tables (see ``pipelines/lake/concurrency.py``)."""

    lock_timeout_s: float = Field(3600.0, gt=0)   # wait for another date's publish at most this long
    conflict_retries: int = Field(6, ge=1)        # attempts of a write that meets a Delta conflict
    retry_base_s: float = Field(0.5, ge=0)        # first backoff; doubled per attempt, plus jitter


class TrainingConfig(_Strict):
    preset: str = "conf/model/small.yaml"
    max_docs_per_source: int = Field(4000, ge=1)
    torch_threads: int = Field(1, ge=0)   # driver-side training; 0 = torch's default


class SequenceEncoderSettings(_Strict):
    """The sequence encoder (``u2qt train-sequence``, :mod:`pipelines.features.sequence_encoder`): what it
    trains on and the model YAML (a :class:`u2qt_core.alignment.AlignmentConfig`, validated when
    training starts, so loading the pipeline settings never imports torch)."""

    model: str = "conf/sequence.yaml"
    history_days: int = Field(28, ge=1)        # token days per training user: (as_of - history_days, as_of]
    max_users: int = Field(20000, ge=2)        # users sampled (by a hash of user_id) for training
    max_steps: int = Field(64, ge=1)           # most recent source-days per user, training and features
    token_rms: float = Field(3.0, gt=0)        # code vectors are rescaled to this RMS before the model


class RegistryConfig(_Strict):
    """The MLflow model registry of tokenizer versions (:mod:`pipelines.tokenizer.registry`)."""

    # empty: an embedded SQLite store at sqlite:///<model_dir>/registry.db; deployed: http(s)://server
    tracking_uri: str = ""
    model_name: str = Field("u2qt-tokenizer", pattern=r"^[A-Za-z0-9_.-]+$")
    alias: str = Field("champion", pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$")   # what nights resolve


class EvaluationGates(_Strict):
    """``u2qt evaluate``: gates a version must pass on held-out days before ``u2qt promote``."""

    heldout_days: int = Field(1, ge=1)                # the last N days of raw_events (training leaves them out)
    max_reconstruction_error: float = Field(0.5, gt=0)  # sum ||x - x_hat||^2 / sum ||x||^2, text sources
    min_level_utilization: float = Field(0.05, ge=0, le=1)   # codes used / min(K, rows), lowest level
    # lowest share of a shared level's codes a source uses, of the most it could (K, or its rows)
    min_shared_coverage: float = Field(0.05, ge=0, le=1)
    max_collision_rate: float = Field(0.005, ge=0, le=1)     # full-tuple, per day (paper: < 0.5 %)
    min_probe_auc: float = Field(0.55, ge=0, le=1)     # linear probe on bag-of-codes, where labels exist
    probe_task: str | None = None                      # user_labels.task of the probe (skipped when absent or None)
    probe_bootstrap: int = Field(200, ge=0)            # resamples for the probe's 95 % interval (0: AUC alone)
    # numeric paths (device/precision[/runtime], e.g. cuda/bf16-autocast) besides the bundle's own
    # whose code agreement with it `u2qt evaluate` measures; a night may run on one of them when
    # the document full-tuple agreement measured is >= min_path_agreement
    validate_paths: list[str] = []
    min_path_agreement: float = Field(0.99, ge=0, le=1)
    path_sample_docs: int = Field(400, gt=0)           # held-out documents per text source for that measure

    @field_validator("validate_paths")
    @classmethod
    def _known_paths(cls, value: list[str]) -> list[str]:
        """Each entry parses as a numeric path; kept in its canonical ``device/precision/runtime`` form."""
        from u2qt_core.numeric_path import parse_path

        try:
            return list(dict.fromkeys(parse_path(v).label for v in value))
        except U2QTError as exc:
            raise ValueError(str(exc)) from exc


class AirflowConfig(_Strict):
    """How dags/ runs the steps: in the Airflow worker (``in_process``, local/demo) or as one
    ``spark-submit`` per step through the ``spark_conn_id`` connection (``spark_submit``)."""

    mode: Literal["in_process", "spark_submit"] = "in_process"
    spark_conn_id: str = "spark_default"
    start_date: date = date(2026, 1, 1)
    catchup: bool = False
    # scheduled + manual runs of u2qt_daily at once: 2, so today's run waiting in its sensor does
    # not block a re-run or a manual date; `airflow backfill create` ignores it: pass
    # --max-active-runs 1 there (README). More is safe (publish pool + lock), it only costs drivers
    max_active_runs: int = Field(2, ge=1)
    retries: int = Field(2, ge=0)                  # every task but the quality gate (0: fails at once)
    retry_delay_minutes: float = Field(5, ge=0)
    sensor_poke_seconds: int = Field(300, ge=1)    # how often to look for the day's raw_events partition
    sensor_timeout_hours: float = Field(18, gt=0)  # then the run is skipped, not failed
    alert_callback: str | None = None              # "module:function(context)"; None logs the failure
    py_files: str | None = None                    # zip for --py-files; None: built at parse time


class CatalogConfig(_Strict):
    database: str = Field("u2qt", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    metastore: Literal["embedded", "external"] = "embedded"


class HistoryConfig(_Strict):
    """``user_token_history`` is a view over ``user_day_tokens`` (the source of truth) and a
    compacted base that ``u2qt maintain`` extends one period at a time."""

    max_days: int = Field(180, ge=1)      # a history row holds the days within this window, newest date last
    period_days: int = Field(30, ge=1)    # days per compacted base partition (written once when closed)


class MaintenanceConfig(_Strict):
    """``u2qt maintain``: OPTIMIZE (Z-order on user_id), VACUUM and Delta log retention (which
    tables, and how: the catalogue's ``maintenance`` of each, :mod:`pipelines.lake.tables`)."""

    vacuum_retain_hours: float = Field(168.0, ge=0)     # below 168 h readers of old snapshots may fail
    log_retention_days: int = Field(30, ge=1)           # delta.logRetentionDuration


class FeaturesConfig(_Strict):
    """``user_features`` (:mod:`pipelines.features.user_features`): which representations of the token history
    are written, over how many days, and how fast old days fade."""

    representations: list[Literal["codebook_vectors", "bag_of_codes", "fused_embedding"]] = [
        "codebook_vectors", "bag_of_codes"]
    window_days: int = Field(90, ge=1)          # token days read per as-of date (as_of - window_days, as_of]
    half_life_days: float = Field(30.0, gt=0)   # a day's weight: 0.5 ** (days before as_of / half_life_days)

    @model_validator(mode="after")
    def _some_representation(self) -> "FeaturesConfig":
        if not self.representations:
            raise KeyProblem("representations", "name at least one of codebook_vectors, bag_of_codes, fused_embedding")
        if len(set(self.representations)) != len(self.representations):
            raise KeyProblem("representations", f"listed twice: {self.representations}")
        return self


class PipelineSettings(_Strict):
    spark_profile: str = "local"
    tables_root: str
    model_dir: str
    sources: str = "conf/sources.yaml"
    encoder: TextEncoderConfig = TextEncoderConfig()
    inference: InferenceConfig = InferenceConfig()
    quality: QualityGates = QualityGates()
    drift: DriftGates = DriftGates()
    staging: StagingConfig = StagingConfig()
    validation: ValidationConfig = ValidationConfig()
    inputs: InputsConfig = InputsConfig()
    training: TrainingConfig = TrainingConfig()
    airflow: AirflowConfig = AirflowConfig()
    catalog: CatalogConfig = CatalogConfig()
    history: HistoryConfig = HistoryConfig()
    maintenance: MaintenanceConfig = MaintenanceConfig()
    concurrency: ConcurrencyConfig = ConcurrencyConfig()
    registry: RegistryConfig = RegistryConfig()
    gates: EvaluationGates = EvaluationGates()
    features: FeaturesConfig = FeaturesConfig()
    sequence_encoder: SequenceEncoderSettings = SequenceEncoderSettings()

    def sources_config(self) -> SourcesConfig:
        return load_sources(_resolve(self.sources))

    def resolve(self, path: str) -> Path:
        return _resolve(path)


def _resolve(path: str) -> Path:
    """A config-relative path: as given if it exists from the CWD, else ``conf/...`` under the
    default conf folder (a checkout's, an installed package's or a --py-files zip's)."""
    candidate = Path(path).expanduser()
    if candidate.is_absolute() or candidate.exists():
        return candidate
    if candidate.parts and candidate.parts[0] == "conf":
        return CONF_DIR.joinpath(*candidate.parts[1:])
    return CONF_DIR.parent / candidate


def load_settings(path: str | Path | None = None, overrides: dict | None = None) -> PipelineSettings:
    """Load the pipeline settings: ``conf/pipeline.yaml``, or a config of one's own of which every
    key left out takes ``conf/pipeline.yaml``'s value (not the model's default); then
    ``overrides``. A key set to null in one's own config takes the model's default."""
    default = CONF_DIR / "pipeline.yaml"
    if path is None or (not is_url(path) and Path(path).expanduser().resolve() == default.resolve()):
        return load_model(PipelineSettings, default, overrides)
    merged = deep_merge(deep_merge(load_raw(default), load_raw(path)), overrides)
    return validate_model(PipelineSettings, merged, str(path))


def load_sources(path: str | Path | None = None) -> SourcesConfig:
    return load_model(SourcesConfig, path or CONF_DIR / "sources.yaml")
