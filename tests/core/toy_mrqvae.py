"""A tiny MRQ-VAE config and clustered toy data, shared by the model and codebook tests."""
from __future__ import annotations

import torch

from u2qt_core.config import MRQVAEConfig

SOURCES = ["bill", "spm", "tabular"]
INPUT_DIMS = {"bill": 12, "spm": 12, "tabular": 5}


def tiny_config(**overrides: object) -> MRQVAEConfig:
    """Three sources, 16 codes of width 8: trains in well under a second."""
    base: dict[str, object] = dict(
        sources=SOURCES,
        input_dims=INPUT_DIMS,
        embed_dim=12,
        num_codes=16,
        code_dim=8,
        hidden_dim=32,
        kmeans_buffer_multiple=2,
        kmeans_iters=5,
    )
    base.update(overrides)
    return MRQVAEConfig(**base)


def make_data(n: int = 128, seed: int = 0) -> dict[str, torch.Tensor]:
    """Clustered toy data: each source ``[n, INPUT_DIMS[source]]``, a mixture of six Gaussian blobs."""
    g = torch.Generator().manual_seed(seed)
    data = {}
    for offset, (source, dim) in enumerate(INPUT_DIMS.items()):
        centres = torch.randn(6, dim, generator=g) * 2 + offset
        pick = torch.randint(0, 6, (n,), generator=g)
        data[source] = centres[pick] + 0.3 * torch.randn(n, dim, generator=g)
    return data
