"""Codebook vectors of a trained tokenizer as the sequence model's input.

* :class:`CodebookTables`: the MRQ-VAE's codebooks as plain numpy arrays (small, picklable, so a
  Spark job broadcasts them once), with the code -> vector lookups the features and the sequence
  encoder need;
* :class:`ScaledCodebook`: a view of a tokenizer whose vectors are rescaled to a fixed RMS, the
  input normalisation of the alignment model (the scale is stored with a trained encoder).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

__all__ = ["CodebookTables", "ScaledCodebook", "rms_scale"]


class CodebookTables:
    """The codebooks of a tokenizer as numpy arrays: ``tables[name]`` float32 ``[T, code_dim]``
    and ``routes[source]`` the codebook name used at each level (shared codebooks once)."""

    def __init__(self, model) -> None:
        cfg = model.config
        self.sources: list[str] = list(cfg.sources)
        self.levels: int = cfg.num_levels
        self.table_size: int = cfg.code_table_size
        self.code_dim: int = cfg.code_dim
        named = model.named_codebooks()
        self.tables = {name: cb.embedding.detach().float().cpu().numpy() for name, cb in named.items()}
        self.routes = {s: model.route_names(s) for s in self.sources}

    @property
    def bag_size(self) -> int:
        return len(self.sources) * self.levels * self.table_size

    def level_vectors(self, source: str, codes: np.ndarray) -> np.ndarray:
        """codes int ``[..., L]`` of one source -> each level's code vector float32 ``[..., L, code_dim]``."""
        route = self.routes[source]
        return np.stack([self.tables[name][codes[..., level]] for level, name in enumerate(route)], axis=-2)

    def vectors(self, source_index: int, codes: np.ndarray) -> np.ndarray:
        """codes int64 ``[n, L]`` of one source -> ``z_hat = sum_l E_l[code_l]`` float32 ``[n, code_dim]``."""
        route = self.routes[self.sources[source_index]]
        return sum(self.tables[name][codes[:, level]] for level, name in enumerate(route))

    def codes_to_vectors(self, codes: Tensor, source: str) -> Tensor:
        """The tokenizer's lookup (``MRQVAE.codes_to_vectors``): ``Long[..., L]`` -> ``[..., L, code_dim]``."""
        return torch.from_numpy(self.level_vectors(source, codes.detach().cpu().numpy().astype(np.int64)))


def rms_scale(tokenizer, sample_codes: Mapping[str, np.ndarray], target_rms: float, sample: int = 2000) -> float:
    """The factor that brings the code vectors of ``sample_codes[source]`` (int ``[n, L]``, the first
    ``sample`` rows of each source) to a per-element RMS of ``target_rms``."""
    with torch.no_grad():
        vecs = [tokenizer.codes_to_vectors(torch.as_tensor(np.asarray(c[:sample]), dtype=torch.long), s).flatten()
                for s, c in sample_codes.items() if len(c)]
    rms = float(torch.cat(vecs).pow(2).mean().sqrt()) if vecs else 0.0
    return target_rms / max(rms, 1e-12)


class ScaledCodebook(torch.nn.Module):
    """A tokenizer view whose ``codes_to_vectors`` returns the code vectors times ``scale``.

    The MRQ-VAE's code vectors are small (RMS ~0.04 on the eval world) next to the alignment
    model's learned position/source/level embeddings (N(0, 1) at init), which otherwise drown the
    token content of the sequence; the rescaling is a fixed input normalisation (:func:`rms_scale`),
    the tokenizer itself is not modified. ``tokenizer``: an ``MRQVAE`` or :class:`CodebookTables`."""

    def __init__(self, tokenizer, scale: float) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.scale = float(scale)
        self.config = getattr(tokenizer, "config", None) or tokenizer

    def codes_to_vectors(self, codes: Tensor, source: str) -> Tensor:
        return self.tokenizer.codes_to_vectors(codes, source) * self.scale
