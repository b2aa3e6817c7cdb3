"""Configuration of the benchmark evaluation (``conf/eval.yaml``), validated with pydantic.

Unknown keys are rejected and every problem is reported as a
:class:`~u2qt_core.errors.ConfigError` whose lines read ``"<file>: <key.path>: <problem>"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from u2qt_core.alignment.inputs import AlignmentConfig
from u2qt_core.config_loader import load_yaml_model

__all__ = [
    "EvalConfig",
    "TokenizerSettings",
    "U2QTSettings",
    "ProbeSettings",
    "AlignmentSettings",
    "MaskNetSettings",
    "CodebookDesign",
    "AblationSettings",
    "ReportSettings",
    "TASK_SETS",
    "load_eval_config",
]

#: Pretext task sets of FOUNDv2 table 5: S(emantic), T(oken), W(indow).
TASK_SETS = ("S", "S+T", "S+W", "S+T+W", "T", "W", "T+W")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TokenizerSettings(_Strict):
    """The main tokenizer: a model preset plus overrides (``mrqvae:``/``train:`` keys)."""

    preset: str = "conf/model/small.yaml"
    overrides: dict[str, dict[str, Any]] = {}
    steps: int = Field(800, ge=1)

    @field_validator("overrides")
    @classmethod
    def _sections(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        unknown = sorted(set(value) - {"mrqvae", "train"})
        if unknown:
            raise ValueError(f"only 'mrqvae' and 'train' sections may be overridden, got {unknown}")
        return value


class U2QTSettings(_Strict):
    """The U²QT-AAAI variant evaluated beside the main (FOUNDv2) tokenizer: an ``architecture:
    u2qt_aaai`` preset trained end to end on every user-day's line sequences, plus overrides
    (``u2qt:``/``mrqvae:``/``train:`` keys). ``inference_user_days`` user-days (seeded draw) are
    tokenized again on the driver by both tokenizers to measure inference CPU time."""

    enabled: bool = True
    preset: str = "conf/model/u2qt_aaai_small.yaml"
    steps: int = Field(400, ge=1)
    overrides: dict[str, dict[str, Any]] = {}
    inference_user_days: int = Field(200, ge=1)

    @field_validator("overrides")
    @classmethod
    def _sections(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        unknown = sorted(set(value) - {"u2qt", "mrqvae", "train"})
        if unknown:
            raise ValueError(f"only 'u2qt', 'mrqvae' and 'train' sections may be overridden, got {unknown}")
        return value


class TfidfSettings(_Strict):
    max_features: int = Field(20000, ge=10)
    min_df: int = Field(2, ge=1)
    ngram_max: int = Field(2, ge=1, le=3)
    sublinear_tf: bool = True


class ProbeSettings(_Strict):
    """Linear probes: standardised features, L2 logistic regression, C picked by inner CV."""

    test_size: float = Field(0.3, gt=0.0, lt=1.0)
    c_grid: list[float] = Field(default_factory=lambda: [0.01, 0.1, 1.0])
    cv_folds: int = Field(3, ge=2)
    max_iter: int = Field(2000, ge=10)
    bag_transform: Literal["counts", "log1p"] = "log1p"
    bootstrap: int = Field(200, ge=0)   # resamples of the test users for 95 % AUC intervals (0: none)
    tfidf: TfidfSettings = TfidfSettings()

    @field_validator("c_grid")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        if not value or any(c <= 0 for c in value):
            raise ValueError("must list at least one C > 0")
        return value


class AlignmentSettings(AlignmentConfig):
    """Multi-scale alignment of the users' token histories (FOUNDv2 table 5 ablation): the
    sequence model's own :class:`~u2qt_core.alignment.inputs.AlignmentConfig` (its sizes, losses and
    optimiser; eval-sized defaults below) plus what the ablation adds."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    task_sets: list[str] = Field(default_factory=lambda: ["S", "S+T", "S+W", "S+T+W"])
    description_days: int = Field(4, ge=1)
    max_steps_per_user: int = Field(64, ge=1)
    token_rms: float = Field(3.0, gt=0)
    """Codebook vectors are rescaled to this per-element RMS before the sequence model
    (see :class:`u2qt_core.alignment.codebooks.ScaledCodebook`)."""
    # AlignmentConfig's fields with the evaluation's smaller defaults
    steps: int = Field(150, ge=0)
    d_model: int = Field(64, ge=4)
    num_layers: int = Field(1, ge=1)
    window_days: int = Field(7, ge=1)

    @field_validator("task_sets")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if v not in TASK_SETS]
        if bad:
            raise ValueError(f"unknown task set(s) {bad}; known: {list(TASK_SETS)}")
        return value

    @model_validator(mode="after")
    def _window_divides(self) -> "AlignmentSettings":
        if self.period % self.window_days:
            raise ValueError("window_days must divide period")
        return self


class MaskNetSettings(_Strict):
    """MaskNet CTR model (serial MaskNet, Wang et al. 2021) on ``rec_impressions``."""

    enabled: bool = True
    embed_dim: int = Field(8, ge=1)
    num_blocks: int = Field(3, ge=1)
    block_dim: int = Field(64, ge=1)
    reduction_ratio: float = Field(2.0, gt=0)
    epochs: int = Field(4, ge=1)
    batch_size: int = Field(1024, ge=8)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    hr_ks: list[int] = Field(default_factory=lambda: [10, 20])
    sampled_negatives: int = Field(100, ge=0)
    token_embed_dim: int = Field(8, ge=1)


class CodebookDesign(_Strict):
    """One tokenizer of the codebook-design ablation (FOUNDv2 table 3)."""

    name: str
    variant: Literal["multiview", "shared_only", "specific_only"]
    shared_levels: int = Field(ge=0)
    specific_levels: int = Field(ge=0)
    num_codes: int = Field(ge=2)
    code_dim: int = Field(ge=1)

    @model_validator(mode="after")
    def _levels(self) -> "CodebookDesign":
        if self.shared_levels + self.specific_levels < 1:
            raise ValueError("shared_levels + specific_levels must be >= 1")
        return self


class AblationSettings(_Strict):
    steps: int = Field(400, ge=1)
    representation: Literal["vectors", "bag"] = "vectors"
    """Token representation probed in the ablations (mean quantized vector per source, or bag of
    codes), with C fixed per task to the C the main probe of that representation picked."""
    codebook_designs: list[CodebookDesign] = []
    drop_sources: bool = True


class ReportSettings(_Strict):
    tsne_points_per_source: int = Field(250, ge=10)
    tsne_perplexity: float = Field(30.0, gt=1)


class EvalConfig(_Strict):
    seed: int = 0
    tasks: list[str] = Field(default_factory=list)   # user_labels.task names probed (the world's: conf/eval.yaml)
    torch_threads: int = Field(1, ge=1)
    rewrite_world: bool = False
    tokenizer: TokenizerSettings = TokenizerSettings()
    u2qt: U2QTSettings = U2QTSettings()
    probe: ProbeSettings = ProbeSettings()
    alignment: AlignmentSettings = AlignmentSettings()
    masknet: MaskNetSettings = MaskNetSettings()
    ablations: AblationSettings = AblationSettings()
    storage: bool = True
    report: ReportSettings = ReportSettings()

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("must list at least one task")
        if len(set(value)) != len(value):
            raise ValueError("a task is listed twice")
        return value


def load_eval_config(path: str | Path, overrides: dict[str, Any] | None = None) -> EvalConfig:
    """Load and validate an evaluation YAML; ``overrides`` are deep-merged in
    (:func:`u2qt_core.config_loader.load_yaml_model`)."""
    return load_yaml_model(EvalConfig, path, overrides)
