"""Multi-scale alignment losses (FOUNDv2 section 4.3, eqs. 10-14).

* token level (eqs. 10-11): position-weighted cosine distance between the model's prediction
  ``h_k`` at token ``k`` and the (frozen) codebook vector of token ``k+1``;
* window level (eq. 12): InfoNCE between two periodic windows of the same user;
* semantic level (eq. 14): InfoNCE between the fused user representation at ``t1`` and the text
  embedding of a description of the user's behaviour at ``t2``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from u2qt_core.errors import InputError

__all__ = [
    "token_position_weights",
    "token_alignment_loss",
    "info_nce",
    "window_alignment_loss",
    "semantic_alignment_loss",
]


def token_position_weights(mask: Tensor, tau_t: float) -> Tensor:
    """Eq. 11 weights ``w_k = 1 + k / tau_t`` for every token.

    Args:
        mask: ``Bool[B, K]``, True for real tokens.
        tau_t: temperature (> 0); larger -> flatter weights.

    Returns:
        ``float [B, K]``: ``k`` is the 1-based rank of the token among the row's real tokens (so
        it is the position in the sequence whatever the padding); 0 at padded positions.
    """
    if tau_t <= 0:
        raise InputError(f"tau_t must be > 0, got {tau_t}")
    mask = mask.bool()
    k = mask.long().cumsum(dim=1).to(torch.float32)
    return torch.where(mask, 1.0 + k / tau_t, torch.zeros_like(k))


def token_alignment_loss(hidden: Tensor, targets: Tensor, mask: Tensor, tau_t: float) -> Tensor:
    """Eqs. 10-11: ``sum_k w_k (1 - cos(h_k, T(z_{k+1}))) / sum_k w_k``.

    Args:
        hidden: ``[B, K, D]`` predictions; ``hidden[:, k]`` predicts token ``k+1``.
        targets: ``[B, K, D]`` codebook vectors ``T(z_k)`` of the tokens themselves (NOT shifted;
            the shift is done here). Detached: the codebook is the fixed target.
        mask: ``Bool[B, K]`` real tokens. Tokens must be packed left within a row (the masked
            pair ``(k, k+1)`` counts only when both are real).
        tau_t: eq. 11 temperature.

    Returns:
        Scalar: the weighted mean over all real ``(k, k+1)`` pairs of the batch (0 when none).
    """
    if hidden.shape[:2] != targets.shape[:2] or hidden.shape[:2] != mask.shape:
        raise InputError(
            f"hidden {tuple(hidden.shape)}, targets {tuple(targets.shape)} and mask "
            f"{tuple(mask.shape)} disagree on [B, K]"
        )
    if hidden.shape[-1] != targets.shape[-1]:
        raise InputError(f"hidden width {hidden.shape[-1]} != target width {targets.shape[-1]}")
    mask = mask.bool()
    pair = mask[:, :-1] & mask[:, 1:]  # [B, K-1]
    weights = token_position_weights(mask, tau_t)[:, :-1] * pair  # w_k for k = 1..K-1
    cos = F.cosine_similarity(hidden[:, :-1].float(), targets[:, 1:].detach().float(), dim=-1, eps=1e-8)
    total = weights.sum()
    if total <= 0:
        return hidden.sum() * 0.0
    return (weights * (1.0 - cos)).sum() / total


def info_nce(a: Tensor, b: Tensor, tau: float, *, symmetric: bool = False) -> Tensor:
    """InfoNCE with cosine similarity (eqs. 12 and 14): positives are matching rows.

    ``-1/B sum_i log( exp(s(a_i, b_i)/tau) / sum_j exp(s(a_i, b_j)/tau) )``.

    Args:
        a: ``[B, D]`` anchors; b: ``[B, D]`` positives (row ``i`` belongs with ``a[i]``).
        tau: temperature (> 0).
        symmetric: also add the ``b -> a`` direction and average (CLIP style); the paper's
            equations are one-directional (the default).

    Returns:
        Scalar loss.
    """
    if a.dim() != 2 or a.shape != b.shape:
        raise InputError(f"info_nce needs two [B, D] tensors of one shape, got {tuple(a.shape)}, {tuple(b.shape)}")
    if tau <= 0:
        raise InputError(f"temperature must be > 0, got {tau}")
    logits = F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T / tau
    labels = torch.arange(a.shape[0], device=a.device)
    loss = F.cross_entropy(logits, labels)
    if symmetric:
        loss = 0.5 * (loss + F.cross_entropy(logits.T, labels))
    return loss


def window_alignment_loss(h_a: Tensor, h_b: Tensor, tau_w: float) -> Tensor:
    """Eq. 12: InfoNCE between window ``W_a`` ``[B, D]`` and its periodic partner ``W_b`` ``[B, D]``
    of the same users (other users' ``W_b`` are the negatives)."""
    return info_nce(h_a, h_b, tau_w)


def semantic_alignment_loss(fused: Tensor, text_emb: Tensor, tau_s: float) -> Tensor:
    """Eq. 14: InfoNCE between fused user representations at ``t1`` ``[B, D]`` and the embeddings
    of their future-behaviour descriptions at ``t2`` ``[B, D]`` (already projected to one width)."""
    return info_nce(fused, text_emb, tau_s)
