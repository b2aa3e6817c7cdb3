"""Configuration of the MRQ-VAE tokenizer and of its training (pydantic v2).

A model preset is a YAML file with the keys ``architecture:`` (``foundv2``, the default, or
``u2qt_aaai``), ``mrqvae:`` (:class:`MRQVAEConfig`), for U²QT-AAAI ``u2qt:``
(:class:`QFormerEncoderConfig`), and ``train:`` (:class:`TrainConfig`); see ``conf/model/*.yaml``. The shipped presets hold the
architecture only: which sources there are and how wide each input is (a :class:`SourceLayout`)
come from the data's sources config (the pipeline's ``conf/sources.yaml`` plus the text encoder's
width), passed as ``load_model_preset(path, layout=...)``, so a source is added or renamed in
one file.  Unknown keys are rejected with
their name, and every validation problem is reported as a :class:`~u2qt_core.errors.ConfigError`
whose message reads ``"<file>: <key.path>: <problem>"`` (loading: :mod:`u2qt_core.config_loader`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from u2qt_core.config_loader import KeyProblem, deep_merge, expand_env, read_yaml, validate_model
from u2qt_core.errors import ConfigError

__all__ = [
    "MRQVAEConfig",
    "TrainConfig",
    "ModelPreset",
    "load_model_preset",
    "SourceLayout",
    "RESERVED_SOURCE_NAMES",
    "QFormerEncoderConfig",
    "ARCHITECTURES",
]

#: The tokenizer architectures a preset names: FOUNDv2 (one text-encoder embedding per document
#: straight into the MRQ-VAE) or U²QT-AAAI (the lines of a document as a sequence through a shared
#: Transformer + causal Q-Former, then the MRQ-VAE, reverse decoder in training).
ARCHITECTURES = ("foundv2", "u2qt_aaai")

#: Source names must read unambiguously inside token strings such as ``<bill3_0087>``:
#: lowercase letters and inner underscores, no digits (a trailing digit would merge with the level).
SOURCE_NAME_RE = re.compile(r"^[a-z](?:[a-z_]*[a-z])?$")
#: Names used by token strings ("s" shared, "c" collision) and codebook names ("shared", "union").
RESERVED_SOURCE_NAMES = frozenset({"s", "c", "shared", "union"})
#: Codes are stored as int16 (``array<smallint>`` in Delta): every code index must be <= this.
MAX_STORED_CODE = 2**15 - 1


class MRQVAEConfig(BaseModel):
    """Architecture of the multi-view residual-quantised VAE (FOUNDv2 eqs. 3-8)."""

    model_config = ConfigDict(extra="forbid")

    sources: list[str]
    input_dims: dict[str, int]
    tabular_sources: list[str] = ["tabular"]
    embed_dim: int = Field(384, ge=1)
    shared_levels: int = Field(2, ge=0)
    specific_levels: int = Field(2, ge=0)
    num_codes: int = Field(1024, ge=2)
    code_dim: int = Field(256, ge=1)
    hidden_dim: int = Field(512, ge=1)
    commitment_weight: float = Field(0.25, ge=0.0)
    variant: Literal["multiview", "shared_only", "specific_only", "union"] = "multiview"
    kmeans_init: bool = True
    kmeans_buffer_multiple: int = Field(4, ge=1)
    kmeans_iters: int = Field(10, ge=0)
    dead_code_threshold: int = Field(1, ge=0)
    dead_code_window: int = Field(50, ge=0)
    #: Tabular sources: standardise each feature by the mean and standard deviation of the training
    #: rows (tensors of the model, so stored in the bundle and hashed into its version) before the
    #: tabular MLP, and reconstruct the standardised features. False: the raw transformed features,
    #: whose reconstruction error is dominated by the widest features (bundles written before this key).
    tabular_standardize: bool = True

    @model_validator(mode="before")
    @classmethod
    def _default_tabular_sources(cls, data: Any) -> Any:
        # The default ["tabular"] only applies when such a source exists; a text-only config
        # need not spell out ``tabular_sources: []``.
        if isinstance(data, dict) and "tabular_sources" not in data:
            sources = data.get("sources")
            if isinstance(sources, list):
                data = {**data, "tabular_sources": [s for s in ["tabular"] if s in sources]}
        return data

    @field_validator("sources")
    @classmethod
    def _check_sources(cls, sources: list[str]) -> list[str]:
        if not sources:
            raise ValueError("must name at least one source")
        seen: set[str] = set()
        for name in sources:
            if not SOURCE_NAME_RE.match(name):
                raise ValueError(
                    f"source name {name!r} must be lowercase letters with inner underscores "
                    "(no digits: they would merge with the level number in token strings)"
                )
            if name in RESERVED_SOURCE_NAMES:
                raise ValueError(f"source name {name!r} is reserved ({sorted(RESERVED_SOURCE_NAMES)})")
            if name in seen:
                raise ValueError(f"source {name!r} is listed twice")
            seen.add(name)
        return sources

    @model_validator(mode="after")
    def _check_cross_fields(self) -> MRQVAEConfig:
        for name in self.sources:
            if name not in self.input_dims:
                raise KeyProblem(f"input_dims.{name}", "missing: every source needs an input width")
        for name, dim in self.input_dims.items():
            if name not in self.sources:
                raise KeyProblem(f"input_dims.{name}", f"not a source (sources: {self.sources})")
            if dim < 1:
                raise KeyProblem(f"input_dims.{name}", f"must be >= 1, got {dim}")
        for name in self.tabular_sources:
            if name not in self.sources:
                raise KeyProblem("tabular_sources", f"{name!r} is not in sources {self.sources}")
        for name in self.sources:
            if name not in self.tabular_sources and self.input_dims[name] != self.embed_dim:
                raise KeyProblem(
                    f"input_dims.{name}",
                    f"text source width {self.input_dims[name]} != embed_dim {self.embed_dim}; text "
                    "embeddings feed the shared MLP directly, so set embed_dim to the text-encoder width",
                )
        if self.num_levels < 1:
            raise KeyProblem("shared_levels", "shared_levels + specific_levels must be >= 1")
        if self.code_table_size - 1 > MAX_STORED_CODE:
            layout = (f"a union level holds num_codes x (1 + {len(self.sources)} sources) = {self.code_table_size} codes"
                      if self.variant == "union" else f"{self.num_codes} codes")
            raise KeyProblem(
                "num_codes",
                f"{layout}, but codes are stored as int16 (smallint): the largest code index must be "
                f"<= {MAX_STORED_CODE}",
            )
        return self

    @property
    def code_table_size(self) -> int:
        """Codes one level's table holds: ``K``, or ``K * (1 + S)`` for a ``union`` level.
        Every emitted code index lies in ``[0, code_table_size)``."""
        if self.variant == "union":
            return self.num_codes * (1 + len(self.sources))
        return self.num_codes

    @property
    def num_levels(self) -> int:
        """Tokens per source, ``L = Lc + Lu`` (for every variant)."""
        return self.shared_levels + self.specific_levels

    @property
    def text_sources(self) -> list[str]:
        """Sources fed as precomputed embeddings (not through the tabular MLP), in token order."""
        return [s for s in self.sources if s not in self.tabular_sources]

    def level_kind(self, level: int) -> Literal["shared", "specific", "union"]:
        """Kind of codebook used at 1-based ``level``: shared, source-specific or union."""
        if not 1 <= level <= self.num_levels:
            raise ValueError(f"level {level} outside 1..{self.num_levels}")
        if self.variant == "union":
            return "union"
        if self.variant == "shared_only":
            return "shared"
        if self.variant == "specific_only":
            return "specific"
        return "shared" if level <= self.shared_levels else "specific"

    @property
    def token_shared_levels(self) -> int:
        """Number of leading levels whose codes all come from shared codebooks (``<sL_code>``
        tokens).  ``union``: 0, since whether a union code is shared depends on the code (block 0)
        not on its level.  The one definition of the shared prefix (the pipeline uses it too)."""
        if self.variant == "shared_only":
            return self.num_levels
        if self.variant in ("specific_only", "union"):
            return 0
        return self.shared_levels


class TrainConfig(BaseModel):
    """Optimisation settings of :func:`u2qt_core.training.train_mrqvae`."""

    model_config = ConfigDict(extra="forbid")

    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    batch_size: int = Field(1024, ge=1)
    steps: int = Field(2000, ge=0)
    grad_clip: float = Field(1.0, ge=0.0)  # 0 disables clipping
    seed: int = 0
    checkpoint_every: int = Field(0, ge=0)  # 0: only the final checkpoint
    log_every: int = Field(50, ge=1)
    device: str = "auto"

    @field_validator("device")
    @classmethod
    def _check_device(cls, device: str) -> str:
        if not re.match(r"^(auto|cpu|mps|cuda(:\d+)?)$", device):
            raise ValueError(f"must be auto, cpu, mps, cuda or cuda:N, got {device!r}")
        return device


class QFormerEncoderConfig(BaseModel):
    """Sizes of the U²QT-AAAI front end: shared Transformer encoder, causal Q-Former, reverse
    decoder (defaults: the paper's implementation details). A preset's ``u2qt:`` section;
    ``input_dims``, ``tabular_sources`` and ``context_sources`` come from the sources config."""

    model_config = ConfigDict(extra="forbid")

    input_dims: dict[str, int]
    """Feature width ``d_in`` of each source's input sequence (a text source: the encoder's width,
    one element per event line; a tabular source: 1, one element per feature)."""
    tabular_sources: list[str] = []
    """Sources whose input is a feature vector, read as a sequence of ``[F, 1]`` scalars."""
    context_sources: dict[str, list[str]] = Field(default_factory=dict)
    """Which sources' queries also cross-attend to which others (eq. 4: behaviour V reads search R);
    a source not listed reads only itself."""
    num_queries: int = Field(4, gt=0)
    qformer_layers: int = Field(4, gt=0)
    hidden: int = Field(512, gt=0)
    """Q-Former width (query vectors)."""
    num_heads: int = Field(8, gt=0)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    d_model: int = Field(512, gt=0)
    """Width of the shared Transformer encoder / decoder."""
    encoder_layers: int = Field(6, gt=0)
    decoder_layers: int = Field(6, gt=0)
    ffn_mult: int = Field(4, gt=0)
    max_len: int = Field(512, gt=0)
    """Longest input sequence (learned position tables); longer sequences keep their first ``max_len``."""
    out_dim: int | None = None
    """Width of ``pooled`` (the shared MLP M's output, the MRQ-VAE input); None -> ``hidden``."""

    @model_validator(mode="after")
    def _check(self) -> "QFormerEncoderConfig":
        if self.hidden % self.num_heads or self.d_model % self.num_heads:
            raise ValueError("hidden and d_model must be divisible by num_heads")
        if not self.input_dims:
            raise ValueError("input_dims must name at least one source")
        for name in self.tabular_sources:
            if name not in self.input_dims:
                raise KeyProblem("tabular_sources", f"{name!r} is not a source ({sorted(self.input_dims)})")
        for source, context in self.context_sources.items():
            for name in [source, *context]:
                if name not in self.input_dims:
                    raise KeyProblem(f"context_sources.{source}", f"{name!r} is not a source ({sorted(self.input_dims)})")
            if source in context:
                raise KeyProblem(f"context_sources.{source}", "a source reads itself already; list only others")
        return self

    @property
    def pooled_dim(self) -> int:
        return self.out_dim or self.hidden


class ModelPreset(BaseModel):
    """A model preset file: the architecture, its sizes and the training settings."""

    model_config = ConfigDict(extra="forbid")

    architecture: Literal["foundv2", "u2qt_aaai"] = "foundv2"
    mrqvae: MRQVAEConfig
    u2qt: QFormerEncoderConfig | None = None
    """The U²QT-AAAI front end's sizes (``architecture: u2qt_aaai`` only)."""
    train: TrainConfig = TrainConfig()

    @model_validator(mode="after")
    def _check_architecture(self) -> "ModelPreset":
        if (self.architecture == "u2qt_aaai") != (self.u2qt is not None):
            raise KeyProblem("u2qt", "a u2qt: section is required by architecture u2qt_aaai and allowed only there")
        if self.u2qt is not None:
            if sorted(self.u2qt.input_dims) != sorted(self.mrqvae.sources):
                raise KeyProblem("u2qt.input_dims", f"must name the MRQ-VAE's sources {self.mrqvae.sources}")
            if self.mrqvae.tabular_sources or self.mrqvae.embed_dim != self.u2qt.pooled_dim:
                raise KeyProblem("mrqvae.embed_dim", f"the MRQ-VAE of a u2qt_aaai preset quantizes the pooled "
                                 f"front-end output: embed_dim {self.u2qt.pooled_dim}, no tabular_sources")
        return self


class SourceLayout(NamedTuple):
    """The data side of a tokenizer: its sources in token order, the input width of each, which
    of them are tabular (through the MLP of eq. 3), the text-encoder width (``embed_dim``) and,
    for U²QT-AAAI, which sources each source's queries also read (``context_sources``)."""

    sources: list[str]
    input_dims: dict[str, int]
    tabular_sources: list[str]
    embed_dim: int
    context_sources: dict[str, list[str]] = {}

    def as_mrqvae_keys(self) -> dict[str, Any]:
        """The layout as ``mrqvae:`` keys of a FOUNDv2 preset."""
        return {"sources": list(self.sources), "input_dims": dict(self.input_dims),
                "tabular_sources": list(self.tabular_sources), "embed_dim": self.embed_dim}

    def as_u2qt_keys(self, pooled_dim: int) -> dict[str, Any]:
        """The layout as ``mrqvae:`` and ``u2qt:`` keys of a U²QT-AAAI preset: the front end reads
        a text source's lines (``embed_dim`` wide) and a tabular source's features one by one
        (width 1); the MRQ-VAE quantizes every source's ``pooled_dim``-wide pooled output."""
        return {"mrqvae": {"sources": list(self.sources), "input_dims": {s: pooled_dim for s in self.sources},
                           "tabular_sources": [], "embed_dim": pooled_dim},
                "u2qt": {"input_dims": {s: 1 if s in self.tabular_sources else self.embed_dim for s in self.sources},
                         "tabular_sources": list(self.tabular_sources),
                         "context_sources": {s: list(c) for s, c in self.context_sources.items()}}}


def load_model_preset(path: str | Path, overrides: dict[str, Any] | None = None, *,
                      layout: SourceLayout | None = None) -> ModelPreset:
    """Load and validate a model preset YAML.

    ``layout`` supplies ``mrqvae.sources / input_dims / tabular_sources / embed_dim``; a preset
    given a layout must not name them itself (one place for the sources: a :class:`ConfigError`
    naming the key says so). Without a layout the file must be complete. ``overrides`` is a
    nested dict deep-merged after that, before validation, e.g. ``{"mrqvae": {"num_codes": 64}}``;
    a ``None`` value deletes the key (see :func:`u2qt_core.config_loader.deep_merge`). Raises
    :class:`ConfigError` naming the file and the offending key path.
    """
    raw = expand_env(read_yaml(path), str(path))
    if layout is not None:
        mrqvae = raw.get("mrqvae") if isinstance(raw, dict) else None
        named = sorted(set(mrqvae or {}) & set(SourceLayout._fields))
        if named:
            raise ConfigError(f"{path}: mrqvae.{named[0]}: a preset holds the architecture only; the sources and "
                              "their input widths come from the sources config (conf/sources.yaml): delete "
                              f"{', '.join('mrqvae.' + k for k in named)}")
        merged = deep_merge(raw, overrides) or {}
        if merged.get("architecture") == "u2qt_aaai":
            sizes = merged.get("u2qt") or {}
            pooled = sizes.get("out_dim") or sizes.get("hidden") or QFormerEncoderConfig.model_fields["hidden"].default
            raw = deep_merge(raw, layout.as_u2qt_keys(int(pooled)))
        else:
            raw = deep_merge(raw, {"mrqvae": layout.as_mrqvae_keys()})
    return validate_model(ModelPreset, deep_merge(raw, overrides), str(path))
