"""Per-feature standardisation of a tabular source inside the MRQ-VAE (:class:`FeatureScaler`).

The tabular transforms of ``conf/sources.yaml`` are fixed (no statistics pass at night), so
their outputs keep very different spreads: a one-hot column has variance up to .25, a credit
score divided by 1,000 about .005. Fed as they are, the reconstruction loss ``L_re`` weighs each
feature by its variance and the codes learn the one-hots while the numeric statistics are left
with a large share of their variance unexplained. The scaler is fitted once on the training rows
and saved with the weights, so the night applies the very same numbers.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["FeatureScaler"]


class FeatureScaler(nn.Module):
    """Per-feature standardisation of a tabular source: ``(x - mean) / std`` with buffers ``mean``
    and ``std`` [F] (identity until :meth:`fit`); saved and hashed with the model's tensors."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, x: Tensor, min_std: float = 1e-6) -> None:
        """Mean and population std of the rows ``x`` [N, F]; a constant feature keeps std 1."""
        x = x.detach().to(self.mean.device, torch.float64)
        std = x.std(dim=0, unbiased=False)
        self.mean.copy_(x.mean(dim=0).to(self.mean.dtype))
        self.std.copy_(torch.where(std > min_std, std, torch.ones_like(std)).to(self.std.dtype))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def inverse(self, x: Tensor) -> Tensor:
        return x * self.std.to(x.dtype) + self.mean.to(x.dtype)
