"""The inputs of alignment pre-training: its config, users' token histories and the frozen
codebook vectors of the trained tokenizer (:mod:`.trainer` runs the training on them)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import pydantic
import torch
from torch import Tensor, nn

from u2qt_core.alignment.model import SequenceModelSizes
from u2qt_core.errors import InputError

__all__ = ["AlignmentConfig", "CodebookTokenizer", "LoraSettings", "UserTokenHistories", "codebook_token_vectors"]

logger = logging.getLogger(__name__)


class CodebookTokenizer(Protocol):
    """What the alignment needs from the tokenizer (``u2qt_core.mrqvae.MRQVAE``)."""

    def codes_to_vectors(self, codes: Tensor, source: str) -> Tensor:  # [..., L] -> [..., L, D]
        ...


class LoraSettings(pydantic.BaseModel, extra="forbid"):
    """LoRA tuning of the description encoder (eq. 13 "LoRA-tuned LLM")."""

    enabled: bool = False
    r: int = pydantic.Field(8, gt=0)
    alpha: int = pydantic.Field(16, gt=0)
    dropout: float = pydantic.Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | None = None
    """None: peft's default for the architecture (BERT query/value, Qwen q_proj/v_proj)."""


class AlignmentConfig(SequenceModelSizes):
    """Model size (:class:`SequenceModelSizes`), loss and optimisation settings of the alignment
    pre-training."""

    tau_t: float = pydantic.Field(20.0, gt=0)
    """Eq. 11 position-weight temperature."""
    tau_w: float = pydantic.Field(0.1, gt=0)
    tau_s: float = pydantic.Field(0.1, gt=0)
    lambda_token: float = pydantic.Field(0.2, ge=0)
    lambda_window: float = pydantic.Field(0.4, ge=0)
    lambda_semantic: float = pydantic.Field(0.4, ge=0)
    period: int = pydantic.Field(7, gt=0)
    window_days: int = pydantic.Field(1, gt=0)
    lr: float = pydantic.Field(1e-3, gt=0)
    weight_decay: float = pydantic.Field(0.01, ge=0)
    grad_clip: float | None = 1.0
    steps: int = pydantic.Field(200, ge=0)
    batch_size: int = pydantic.Field(64, gt=1)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    log_every: int = pydantic.Field(25, gt=0)
    progress: bool = False
    lora: LoraSettings = LoraSettings()


@dataclass
class UserTokenHistories:
    """Users' token histories, one row per user, steps padded to ``S``.

    Attributes:
        codes: ``Long[U, S, L]`` MRQ-VAE codes of each source-day step (any value where padded).
        source_ids: ``Long[U, S]`` index into ``sources`` of each step.
        day_index: ``Long[U, S]`` day number of each step.
        mask: ``Bool[U, S]`` real steps.
        sources: source names, ``sources[source_id]``.
    """

    codes: Tensor
    source_ids: Tensor
    day_index: Tensor
    mask: Tensor
    sources: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.codes.dim() != 3:
            raise InputError(f"codes must be [U, S, L], got {tuple(self.codes.shape)}")
        for name in ("source_ids", "day_index", "mask"):
            if getattr(self, name).shape != self.codes.shape[:2]:
                raise InputError(f"{name} must be [U, S] = {tuple(self.codes.shape[:2])}, got {tuple(getattr(self, name).shape)}")
        self.mask = self.mask.bool()
        if not self.sources:
            raise InputError("sources (names of the source ids) must be given")
        real_src = self.source_ids[self.mask]
        if real_src.numel() and (int(real_src.min()) < 0 or int(real_src.max()) >= len(self.sources)):
            raise InputError(f"source_ids must lie in [0, {len(self.sources)})")

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    def select(self, index: Tensor | np.ndarray | Sequence[int]) -> "UserTokenHistories":
        """Rows ``index`` of every tensor."""
        index = torch.as_tensor(np.asarray(index), dtype=torch.long)
        return UserTokenHistories(
            self.codes[index], self.source_ids[index], self.day_index[index], self.mask[index], list(self.sources)
        )

    def to(self, device: torch.device) -> "UserTokenHistories":
        return UserTokenHistories(
            self.codes.to(device), self.source_ids.to(device), self.day_index.to(device), self.mask.to(device), list(self.sources)
        )


def codebook_token_vectors(
    tokenizer: CodebookTokenizer, histories: UserTokenHistories, code_dim: int, device: torch.device | None = None
) -> Tensor:
    """Codebook vector of every token: ``[U, S, L, code_dim]`` (zeros at padded steps), no grad.

    The lookup runs where the tokenizer's parameters live; the result is moved to ``device``
    (default: the histories' device).
    """
    u, s, levels = histories.codes.shape
    params = list(tokenizer.parameters()) if isinstance(tokenizer, nn.Module) else []
    tok_device = params[0].device if params else histories.codes.device
    out = torch.zeros(u, s, levels, code_dim, device=tok_device)
    with torch.no_grad():
        for k, name in enumerate(histories.sources):
            sel = (histories.mask & (histories.source_ids == k)).to(tok_device)
            if bool(sel.any()):
                codes = histories.codes.to(tok_device)[sel].long()
                out[sel] = tokenizer.codes_to_vectors(codes, name).to(out.dtype)
    return out.to(device if device is not None else histories.codes.device)


def _infer_code_dim(tokenizer: CodebookTokenizer, histories: UserTokenHistories) -> tuple[int, int]:
    """(code_dim, num_levels) from the tokenizer's config or one probe lookup."""
    config = getattr(tokenizer, "config", None)
    if config is not None and hasattr(config, "code_dim"):
        return int(config.code_dim), int(histories.codes.shape[-1])
    probe = tokenizer.codes_to_vectors(torch.zeros(1, histories.codes.shape[-1], dtype=torch.long), histories.sources[0])
    return int(probe.shape[-1]), int(histories.codes.shape[-1])
