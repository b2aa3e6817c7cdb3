"""User sequence model trained by the multi-scale alignment tasks (FOUNDv2 section 4.3).

A user's history is a sequence of source-day *steps*; each step is ``L`` tokens (one per
residual level) produced by the MRQ-VAE. The model flattens the steps into one token sequence
``z_1..z_K`` (``K = S * L``), embeds each token as

    ``W_in T(z_k) + pos_k + source(step) + level(k mod L)``

where ``T(z_k)`` is the token's codebook vector, and runs a causal pre-norm Transformer. It returns
per-token hidden states, next-token predictions in codebook space (for eq. 10), the fused user
embedding and its projection for the contrastive losses (eqs. 12, 14).

Pooling (``pooling``):

* ``per_source``: a masked mean of the hidden states per source, concatenated
  ``[B, num_sources * d_model]``; the contrastive losses see a linear projection of it
  ``[B, d_model]`` (a projection head, as in SimCLR, so the losses need not squeeze the
  representation itself). A user without steps of a source gets zeros in that block.
* ``per_source_with_codes``: ``per_source`` followed by each source's mean input vector
  ``sum_l T(z_l)`` over its steps (the mean codebook vector of the steps the model saw),
  ``[B, num_sources * (d_model + code_dim)]``: a skip path, so the representation keeps what the
  codes say and the Transformer only has to add context;
* ``codes_with_summary`` (default): each source's mean code vector as above, then the projection
  the losses train, ``[B, num_sources * code_dim + d_model]``: the projection sees the same
  ``per_source_with_codes`` vector, so the representation is the codes plus one ``d_model``
  summary shaped by the alignment tasks, instead of ``num_sources * d_model`` raw hidden means
  that a downstream probe has to regularise away (ablation in the README, Evaluation);
* ``mean``: one masked mean over all tokens, then a linear map ``[B, d_model]``; the same vector
  is the representation and the losses' input. This is the first version's pooling; the
  evaluation's alignment ablation showed it loses what tells sources apart (README, Evaluation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pydantic
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from u2qt_core.errors import InputError

__all__ = ["SequenceModelSizes", "UserSequenceConfig", "UserSequenceModel", "UserSequenceOutput", "compact_steps"]


class SequenceModelSizes(pydantic.BaseModel, extra="forbid"):
    """Width, depth and regularisation of :class:`UserSequenceModel`, shared by its own config
    and the alignment training config (:class:`~u2qt_core.alignment.AlignmentConfig`)."""

    d_model: int = pydantic.Field(128, gt=0)
    num_layers: int = pydantic.Field(2, gt=0)
    num_heads: int = pydantic.Field(4, gt=0)
    ffn_mult: int = pydantic.Field(4, gt=0)
    dropout: float = pydantic.Field(0.1, ge=0.0, lt=1.0)
    max_tokens: int = pydantic.Field(2048, gt=1)
    """Longest flattened sequence ``S * L`` (learned position table)."""
    pooling: Literal["per_source", "per_source_with_codes", "codes_with_summary", "mean"] = "codes_with_summary"
    """How the hidden states become the fused embedding (module docstring)."""

    @pydantic.model_validator(mode="after")
    def _check_heads(self) -> "SequenceModelSizes":
        if self.d_model % self.num_heads:
            raise ValueError("d_model must be divisible by num_heads")
        return self

    def sizes(self) -> dict[str, int | float]:
        """Just the size fields, to build a :class:`UserSequenceConfig` from a larger config."""
        return {name: getattr(self, name) for name in SequenceModelSizes.model_fields}


class UserSequenceConfig(SequenceModelSizes):
    """Sizes of :class:`UserSequenceModel`: the shared sizes plus the tokenizer's shape."""

    code_dim: int = pydantic.Field(gt=0)
    """Width of the codebook vectors (MRQ-VAE ``code_dim``)."""
    num_sources: int = pydantic.Field(gt=0)
    num_levels: int = pydantic.Field(gt=0)
    """Tokens per step ``L``."""


@dataclass
class UserSequenceOutput:
    """Result of :meth:`UserSequenceModel.forward` (``N = S' * L`` tokens, steps packed left).

    Attributes:
        hidden: ``[B, N, d_model]`` per-token hidden states (causal).
        predictions: ``[B, N, code_dim]``; ``predictions[:, k]`` predicts token ``k+1``.
        token_vectors: ``[B, N, code_dim]`` the input codebook vectors, in the same packed order
            (the token-level targets).
        token_mask: ``Bool[B, N]`` real tokens.
        fused: ``[B, fused_dim]`` fused user embedding, the representation downstream models use
            (``fused_dim``: ``num_sources * d_model`` with ``per_source`` pooling,
            ``num_sources * (d_model + code_dim)`` with ``per_source_with_codes``,
            ``num_sources * code_dim + d_model`` with ``codes_with_summary``, ``d_model`` with ``mean``).
        projected: ``[B, d_model]`` what the window and semantic losses compare.
    """

    hidden: Tensor
    predictions: Tensor
    token_vectors: Tensor
    token_mask: Tensor
    fused: Tensor
    projected: Tensor


def compact_steps(step_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Indices that pack each row's real steps to the left, keeping their order.

    Args:
        step_mask: ``Bool[B, S]``.

    Returns:
        ``(index Long[B, S'], mask Bool[B, S'])`` with ``S' = max(1, max real steps per row)``;
        gather a ``[B, S, ...]`` tensor along dim 1 with ``index`` to pack it.
    """
    order = torch.sort((~step_mask.bool()).to(torch.int8), dim=1, stable=True).indices
    width = max(1, int(step_mask.sum(dim=1).max().item()) if step_mask.numel() else 1)
    index = order[:, :width]
    return index, torch.gather(step_mask.bool(), 1, index)


class _Block(nn.Module):
    """Pre-norm Transformer block with scaled-dot-product attention and a boolean mask."""

    def __init__(self, d_model: int, heads: int, ffn_mult: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(
            nn.Linear(d_model, ffn_mult * d_model), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_mult * d_model, d_model)
        )
        self.dropout = nn.Dropout(dropout)
        self.attn_dropout = dropout

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:
        """``x [B, N, d]``, ``allowed Bool[B, 1, N, N]`` (True = may attend) -> ``[B, N, d]``."""
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.attn_dropout if self.training else 0.0
        )
        x = x + self.dropout(self.out(att.transpose(1, 2).reshape(b, n, d)))
        return x + self.dropout(self.ffn(self.norm2(x)))


class UserSequenceModel(nn.Module):
    """Causal Transformer over a user's flattened token sequence (see module docstring)."""

    def __init__(self, config: UserSequenceConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.in_proj = nn.Linear(c.code_dim, c.d_model)
        self.position = nn.Embedding(c.max_tokens, c.d_model)
        self.source = nn.Embedding(c.num_sources, c.d_model)
        self.level = nn.Embedding(c.num_levels, c.d_model)
        self.embed_dropout = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(_Block(c.d_model, c.num_heads, c.ffn_mult, c.dropout) for _ in range(c.num_layers))
        self.norm = nn.LayerNorm(c.d_model)
        self.predict = nn.Linear(c.d_model, c.code_dim)
        self.fused_dim = {"per_source": c.num_sources * c.d_model, "mean": c.d_model,
                          "per_source_with_codes": c.num_sources * (c.d_model + c.code_dim),
                          "codes_with_summary": c.num_sources * c.code_dim + c.d_model}[c.pooling]
        fuse_in = c.num_sources * (c.d_model + c.code_dim) if c.pooling == "codes_with_summary" else self.fused_dim
        self.fuse = nn.Linear(fuse_in, c.d_model)

    def forward(self, token_vectors: Tensor, source_ids: Tensor, step_mask: Tensor) -> UserSequenceOutput:
        """Run the model.

        Args:
            token_vectors: ``[B, S, L, code_dim]`` codebook vectors of each step's tokens.
            source_ids: ``Long[B, S]`` source index of each step (``< num_sources``).
            step_mask: ``Bool[B, S]`` real steps; padded steps may sit anywhere (they are packed
                out, so positions count real steps only).

        Returns:
            :class:`UserSequenceOutput`.
        """
        c = self.config
        if token_vectors.dim() != 4 or token_vectors.shape[2] != c.num_levels or token_vectors.shape[3] != c.code_dim:
            raise InputError(
                f"token_vectors must be [B, S, {c.num_levels}, {c.code_dim}], got {tuple(token_vectors.shape)}"
            )
        if source_ids.shape != token_vectors.shape[:2] or step_mask.shape != token_vectors.shape[:2]:
            raise InputError("source_ids and step_mask must be [B, S] like token_vectors")
        step_mask = step_mask.bool()
        index, mask = compact_steps(step_mask)
        b, s = index.shape
        n = s * c.num_levels
        if n > c.max_tokens:
            raise InputError(f"{n} tokens exceed max_tokens={c.max_tokens}")
        vecs = torch.gather(token_vectors, 1, index[:, :, None, None].expand(-1, -1, c.num_levels, c.code_dim))
        src = torch.gather(source_ids.long(), 1, index).masked_fill(~mask, 0)
        if bool(((src < 0) | (src >= c.num_sources)).any()):
            raise InputError(f"source id out of range [0, {c.num_sources})")

        vecs = vecs.reshape(b, n, c.code_dim)
        token_mask = mask.repeat_interleave(c.num_levels, dim=1)  # [B, N]
        levels = torch.arange(c.num_levels, device=vecs.device).repeat(s)  # [N]
        x = (
            self.in_proj(vecs)
            + self.position.weight[:n]
            + self.source(src).repeat_interleave(c.num_levels, dim=1)
            + self.level(levels)
        )
        x = self.embed_dropout(x)
        causal = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
        eye = torch.eye(n, dtype=torch.bool, device=x.device)
        # padded queries attend to themselves only, so no row is fully masked (no NaN)
        allowed = ((causal & token_mask[:, None, :]) | eye).unsqueeze(1)  # [B, 1, N, N]
        for block in self.blocks:
            x = block(x, allowed)
        hidden = self.norm(x)
        token_src = src.repeat_interleave(c.num_levels, dim=1)  # [B, N]
        if c.pooling != "mean":
            fused = self._pool_per_source(hidden, token_src, token_mask)
            if c.pooling != "per_source":  # sum over a step's levels: L x the mean level vector
                codes = self._pool_per_source(vecs, token_src, token_mask) * c.num_levels
                fused = torch.cat([fused, codes], dim=1)
            projected = self.fuse(fused)
            if c.pooling == "codes_with_summary":
                fused = torch.cat([codes, projected], dim=1)
        else:
            m = token_mask.unsqueeze(-1).to(hidden.dtype)
            fused = projected = self.fuse((hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0))
        return UserSequenceOutput(
            hidden=hidden,
            predictions=self.predict(hidden),
            token_vectors=vecs,
            token_mask=token_mask,
            fused=fused,
            projected=projected,
        )

    def _pool_per_source(self, values: Tensor, token_src: Tensor, token_mask: Tensor) -> Tensor:
        """Masked mean of ``values [B, N, d]`` over each source's tokens -> ``[B, num_sources * d]``
        (zeros for a source the row has no tokens of)."""
        c = self.config
        onehot = F.one_hot(token_src, c.num_sources).to(values.dtype) * token_mask.unsqueeze(-1).to(values.dtype)
        sums = torch.einsum("bns,bnd->bsd", onehot, values)  # [B, S, d]
        counts = onehot.sum(dim=1).clamp(min=1.0).unsqueeze(-1)  # [B, S, 1]
        return (sums / counts).reshape(values.shape[0], c.num_sources * values.shape[-1])
