"""U2QT-AAAI encoder: shared Transformer + causal Q-Former, and the reverse decoder.

Alternative to the FOUNDv2 text-encoder path (U2QT-AAAI, "Multi-source Encoding" and
"Cross-source Fusion and Condensation"):

1. Each source ``s`` gives a feature sequence ``X_s [B, T_s, d_in_s]``; a per-source linear map
   to ``d_model`` plus learned positions feeds a **shared** Transformer encoder
   ``H_s = Tr(X_s)`` (eq. 3).
2. A **shared** Q-Former with **shared** learnable queries ``Q^0 [q, hidden]`` condenses each
   ``H_s`` (eq. 4). Every layer: self-attention over the queries, cross-attention to the
   source's own ``H_s``, a second cross-attention to its *context* sources, then an FFN. The
   context is what makes it causal: the behaviour stream V also reads search R
   (``Q^{i+1,V} = QFormer(Q^{i,V}, H_V, H_R)``) while T and R read only themselves
   (``QFormer(Q^{i,T}, H_T, H_T)``).
3. ``pooled``: mean over queries (P) then a shared MLP (M): ``bar H_s = M(P(Q^{J,s}))``, the
   MRQ-VAE input.

:class:`ReverseQFormerDecoder` goes back: a ``[B, hidden]`` (quantized) vector is unpooled into
``q`` latent tokens, a reverse Q-Former lets ``T`` learned position queries read them (giving
the continuous sequence), and a Transformer decoder + per-source head reconstructs
``[B, T, d_in_s]``.

Masks are ``BoolTensor [B, T]`` with **True = real token**, False = padding.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from u2qt_core.config import QFormerEncoderConfig
from u2qt_core.errors import InputError

logger = logging.getLogger(__name__)

__all__ = ["QFormerEncoderConfig", "CausalQFormerEncoder", "ReverseQFormerDecoder", "masked_reconstruction_loss"]


def _safe_key_padding(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Key-padding mask for ``nn.MultiheadAttention`` (True = ignore) and a ``[B, 1, 1]`` flag of
    rows with at least one real token. Empty rows attend to position 0 (their output is zeroed
    by the caller) instead of producing NaN."""
    has_any = mask.any(dim=1)
    safe = mask.clone()
    safe[~has_any, 0] = True
    return ~safe, has_any.view(-1, 1, 1).to(torch.get_default_dtype())


class _FFN(nn.Sequential):
    def __init__(self, dim: int, mult: int, dropout: float) -> None:
        super().__init__(
            nn.Linear(dim, dim * mult), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim * mult, dim)
        )


class CausalQFormerLayer(nn.Module):
    """One layer of eq. 4: queries self-attend, read the primary memory, then the context.

    Pre-norm residual blocks. ``queries [B, q, hidden]``; memories ``[B, T, d_model]``.
    """

    def __init__(self, hidden: int, d_model: int, heads: int, dropout: float, ffn_mult: int) -> None:
        super().__init__()
        self.norm_self = nn.LayerNorm(hidden)
        self.self_attn = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.norm_primary = nn.LayerNorm(hidden)
        self.primary_attn = nn.MultiheadAttention(
            hidden, heads, dropout=dropout, kdim=d_model, vdim=d_model, batch_first=True
        )
        self.norm_context = nn.LayerNorm(hidden)
        self.context_attn = nn.MultiheadAttention(
            hidden, heads, dropout=dropout, kdim=d_model, vdim=d_model, batch_first=True
        )
        self.norm_ffn = nn.LayerNorm(hidden)
        self.ffn = _FFN(hidden, ffn_mult, dropout)
        self.dropout = nn.Dropout(dropout)

    def _cross(
        self, attn: nn.MultiheadAttention, norm: nn.LayerNorm, q: torch.Tensor, mem: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        kpm, has_any = _safe_key_padding(mask)
        out = attn(norm(q), mem, mem, key_padding_mask=kpm, need_weights=False)[0]
        return q + self.dropout(out) * has_any.to(out.dtype)

    def forward(
        self,
        queries: torch.Tensor,
        primary: torch.Tensor,
        primary_mask: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor,
    ) -> torch.Tensor:
        """``[B, q, hidden]`` -> ``[B, q, hidden]``."""
        x = self.norm_self(queries)
        queries = queries + self.dropout(self.self_attn(x, x, x, need_weights=False)[0])
        queries = self._cross(self.primary_attn, self.norm_primary, queries, primary, primary_mask)
        queries = self._cross(self.context_attn, self.norm_context, queries, context, context_mask)
        return queries + self.dropout(self.ffn(self.norm_ffn(queries)))


def _transformer_stack(d_model: int, heads: int, layers: int, dropout: float, ffn_mult: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(
        d_model, heads, d_model * ffn_mult, dropout=dropout, activation="gelu", batch_first=True, norm_first=True
    )
    return nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False)


class CausalQFormerEncoder(nn.Module):
    """Shared Transformer encoder + causal Q-Former with shared queries + pooling/MLP.

    ``forward(inputs, masks)``: ``{s: [B, T_s, d_in_s]}``, ``{s: Bool[B, T_s]}`` ->
    ``{s: [B, q, hidden]}``; ``pooled(inputs, masks)`` -> ``{s: [B, out_dim]}``.
    """

    def __init__(self, config: QFormerEncoderConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.input_proj = nn.ModuleDict({s: nn.Linear(d, c.d_model) for s, d in c.input_dims.items()})
        self.position = nn.Embedding(c.max_len, c.d_model)
        self.encoder = _transformer_stack(c.d_model, c.num_heads, c.encoder_layers, c.dropout, c.ffn_mult)
        self.queries = nn.Parameter(torch.randn(c.num_queries, c.hidden) * 0.02)  # shared Q^0
        self.layers = nn.ModuleList(
            CausalQFormerLayer(c.hidden, c.d_model, c.num_heads, c.dropout, c.ffn_mult)
            for _ in range(c.qformer_layers)
        )
        self.out_norm = nn.LayerNorm(c.hidden)
        self.mlp = nn.Sequential(nn.Linear(c.hidden, c.hidden), nn.GELU(), nn.Linear(c.hidden, c.pooled_dim))

    def _check(self, inputs: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> None:
        for s, x in inputs.items():
            if s not in self.input_proj:
                raise InputError(f"unknown source {s!r}; configured: {sorted(self.input_proj)}")
            if s not in masks:
                raise InputError(f"no mask given for source {s!r}")
            if x.dim() != 3 or x.shape[-1] != self.config.input_dims[s]:
                raise InputError(
                    f"source {s!r}: expected [B, T, {self.config.input_dims[s]}], got {tuple(x.shape)}"
                )
            if x.shape[1] > self.config.max_len:
                raise InputError(f"source {s!r}: length {x.shape[1]} > max_len {self.config.max_len}")
            if masks[s].shape != x.shape[:2]:
                raise InputError(f"source {s!r}: mask shape {tuple(masks[s].shape)} != {tuple(x.shape[:2])}")

    def encode_sources(
        self, inputs: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Shared Transformer encoder (eq. 3): ``{s: [B, T_s, d_in]}`` -> ``{s: [B, T_s, d_model]}``."""
        self._check(inputs, masks)
        out: dict[str, torch.Tensor] = {}
        for s, x in inputs.items():
            mask = masks[s].bool()
            h = self.input_proj[s](x) + self.position.weight[: x.shape[1]]
            kpm, _ = _safe_key_padding(mask)
            h = self.encoder(h, src_key_padding_mask=kpm)
            out[s] = h * mask.unsqueeze(-1).to(h.dtype)  # padded positions are zero
        return out

    def forward(
        self, inputs: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """``{s: [B, T_s, d_in]}``, ``{s: Bool[B, T_s]}`` -> query states ``{s: [B, q, hidden]}``."""
        hidden = self.encode_sources(inputs, masks)
        out: dict[str, torch.Tensor] = {}
        for s, h in hidden.items():
            mask = masks[s].bool()
            ctx_names = [c for c in self.config.context_sources.get(s, []) if c in hidden]
            if ctx_names:
                ctx = torch.cat([hidden[c] for c in ctx_names], dim=1)
                ctx_mask = torch.cat([masks[c].bool() for c in ctx_names], dim=1)
            else:  # T and R: Q-Former(Q, H_s, H_s)
                ctx, ctx_mask = h, mask
            q = self.queries.unsqueeze(0).expand(h.shape[0], -1, -1)
            for layer in self.layers:
                q = layer(q, h, mask, ctx, ctx_mask)
            out[s] = self.out_norm(q)
        return out

    def pooled(
        self, inputs: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """``M(P(Q^J))``: mean over the queries then the shared MLP -> ``{s: [B, out_dim]}``."""
        return {s: self.mlp(q.mean(dim=1)) for s, q in self.forward(inputs, masks).items()}


class ReverseQFormerLayer(nn.Module):
    """Position queries ``[B, T, d_model]`` self-attend (masked) and read the latent tokens."""

    def __init__(self, d_model: int, hidden: int, heads: int, dropout: float, ffn_mult: int) -> None:
        super().__init__()
        self.norm_self = nn.LayerNorm(d_model)
        self.self_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.norm_cross = nn.LayerNorm(d_model)
        self.cross_attn = nn.MultiheadAttention(
            d_model, heads, dropout=dropout, kdim=hidden, vdim=hidden, batch_first=True
        )
        self.norm_ffn = nn.LayerNorm(d_model)
        self.ffn = _FFN(d_model, ffn_mult, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        kpm, _ = _safe_key_padding(mask)
        y = self.norm_self(x)
        x = x + self.dropout(self.self_attn(y, y, y, key_padding_mask=kpm, need_weights=False)[0])
        y = self.norm_cross(x)
        x = x + self.dropout(self.cross_attn(y, latent, latent, need_weights=False)[0])
        return x + self.dropout(self.ffn(self.norm_ffn(x)))


class ReverseQFormerDecoder(nn.Module):
    """Reconstructs ``[B, T, d_in_s]`` from a ``[B, out_dim]`` (quantized) vector.

    Unpool into ``q`` latent tokens ``[B, q, hidden]`` -> reverse Q-Former (``T`` learned
    position + source queries read them) -> Transformer decoder -> per-source output head.
    """

    def __init__(self, config: QFormerEncoderConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.unpool = nn.Sequential(
            nn.Linear(c.pooled_dim, c.hidden), nn.GELU(), nn.Linear(c.hidden, c.num_queries * c.hidden)
        )
        self.latent_norm = nn.LayerNorm(c.hidden)
        self.position = nn.Embedding(c.max_len, c.d_model)
        self.source = nn.ParameterDict(
            {s: nn.Parameter(torch.zeros(c.d_model)) for s in c.input_dims}
        )
        self.layers = nn.ModuleList(
            ReverseQFormerLayer(c.d_model, c.hidden, c.num_heads, c.dropout, c.ffn_mult)
            for _ in range(c.qformer_layers)
        )
        self.decoder = _transformer_stack(c.d_model, c.num_heads, c.decoder_layers, c.dropout, c.ffn_mult)
        self.heads = nn.ModuleDict({s: nn.Linear(c.d_model, d) for s, d in c.input_dims.items()})

    def forward(self, z: torch.Tensor, source: str, mask: torch.Tensor) -> torch.Tensor:
        """``z [B, out_dim]``, ``mask Bool[B, T]`` (the lengths to rebuild) -> ``[B, T, d_in_s]``."""
        if source not in self.heads:
            raise InputError(f"unknown source {source!r}; configured: {sorted(self.heads)}")
        b, t = mask.shape
        if t > self.config.max_len:
            raise InputError(f"length {t} > max_len {self.config.max_len}")
        mask = mask.bool()
        latent = self.latent_norm(self.unpool(z).view(b, self.config.num_queries, self.config.hidden))
        x = (self.position.weight[:t] + self.source[source]).unsqueeze(0).expand(b, -1, -1)
        for layer in self.layers:
            x = layer(x, mask, latent)
        kpm, _ = _safe_key_padding(mask)
        x = self.decoder(x, src_key_padding_mask=kpm)
        return self.heads[source](x)


def masked_reconstruction_loss(recon: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over real positions: ``[B, T, d]``, ``[B, T, d]``, ``Bool[B, T]`` -> scalar."""
    m = mask.unsqueeze(-1).to(recon.dtype)
    se = F.mse_loss(recon, target, reduction="none") * m
    return se.sum() / (m.sum() * recon.shape[-1]).clamp(min=1.0)
