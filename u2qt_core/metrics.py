"""Codebook health and reconstruction metrics of a trained MRQ-VAE (JSON-serialisable).

Layout of :func:`codebook_metrics`'s result::

    {
      "variant": str, "num_levels": L, "num_codes": K,
      "per_level": [{"level": l, "kind": "shared"|"specific"|"union", "codebooks": [names],
                     "utilization": used codes / codes available at the level,
                     "perplexity": exp(entropy) of the pooled (codebook, code) usage}, ...],
      "per_codebook": {name: {"size", "used", "utilization", "perplexity", "initialized",
                              "segments": {"shared"|source: utilization}  (union only)}},
      "per_source": {source: {"rows", "recon_mse", "recon_cosine", "collision_rate",
                              "residual_norm": [mean ||r^1||, ..., mean ||r^{L+1}||],
                              "shared_coverage": {level: used / min(K, rows)}}},  (shared levels)
      "residual_norm": [mean ||r^l|| over all rows of all sources, l = 1..L+1],
    }

``shared_coverage`` tells whether a source keeps its share of the shared codebooks: the distinct
codes of a shared level the source's rows use, over the most it could use (``K``, or its number
of rows when fewer). A source squeezed onto a handful of shared codes (e.g. text sources next to
a tabular source that took the level over) scores near ``1 / K``.

``r^1`` is the latent ``z`` and ``r^{L+1}`` the final quantisation error; on a trained model the
sequence should not grow.  The collision rate is of the L-token tuple of one source (the
user-level tuple across sources is assembled by the pipeline).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from u2qt_core.collisions import collision_rate
from u2qt_core.errors import InputError
from u2qt_core.mrqvae import MRQVAE

__all__ = ["codebook_metrics", "usage_stats"]

logger = logging.getLogger(__name__)


def usage_stats(counts: np.ndarray) -> dict[str, float | int]:
    """Usage counts [K] -> used codes, utilization (share used) and perplexity (exp entropy)."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    used = int((counts > 0).sum())
    if total <= 0:
        return {"used": 0, "utilization": 0.0, "perplexity": 0.0}
    p = counts[counts > 0] / total
    entropy = float(-(p * np.log(p)).sum())
    return {"used": used, "utilization": used / counts.size, "perplexity": math.exp(entropy)}


@torch.no_grad()
def codebook_metrics(model: MRQVAE, embeddings: dict[str, np.ndarray], batch_size: int = 4096) -> dict[str, Any]:
    """Evaluate utilization, perplexity, reconstruction, collisions and residual norms.

    ``embeddings[source]`` is float32 [N, input_dims[source]] (raw features for tabular sources);
    sources absent or empty are skipped.  Runs the eval path (no training state is touched).
    """
    cfg = model.config
    device = next(model.parameters()).device
    names = model.named_codebooks()
    sizes = model.codebook_sizes()
    counts = {name: np.zeros(size, dtype=np.int64) for name, size in sizes.items()}
    per_source: dict[str, Any] = {}
    norm_sums = np.zeros(cfg.num_levels + 1)
    total_rows = 0
    for source, array in embeddings.items():
        if source not in cfg.sources:
            raise InputError(f"unknown source {source!r}; known sources: {cfg.sources}")
    for source in cfg.sources:
        array = embeddings.get(source)
        if array is None or len(array) == 0:
            continue
        data = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        all_codes, norm_chunks = [], []
        sq_err, cos_sum = 0.0, 0.0
        for start in range(0, data.shape[0], batch_size):
            x = data[start : start + batch_size].to(device)
            codes, z_hat, norms = model.quantize_with_residuals(x, source)
            recon = model.decode_quantized(z_hat, source).float()     # raw units (tabular scaling undone)
            sq_err += float(((recon - x) ** 2).mean(dim=1).sum())
            cos_sum += float(F.cosine_similarity(recon, x, dim=1, eps=1e-8).sum())
            all_codes.append(codes.cpu())
            norm_chunks.append(norms.cpu())
        codes_np = torch.cat(all_codes).numpy()
        norms_np = torch.cat(norm_chunks).numpy().astype(np.float64)
        n = codes_np.shape[0]
        coverage = {}
        for level, name in enumerate(model.route_names(source)):
            counts[name] += np.bincount(codes_np[:, level], minlength=sizes[name])
            if cfg.level_kind(level + 1) == "shared":
                coverage[level + 1] = len(np.unique(codes_np[:, level])) / min(sizes[name], n)
        norm_sums += norms_np.sum(axis=0)
        total_rows += n
        per_source[source] = {
            "rows": int(n),
            "recon_mse": sq_err / n,
            "recon_cosine": cos_sum / n,
            "collision_rate": collision_rate(codes_np),
            "residual_norm": norms_np.mean(axis=0).tolist(),
            "shared_coverage": coverage,
        }

    per_codebook: dict[str, Any] = {}
    for name, codebook in names.items():
        entry: dict[str, Any] = {"size": sizes[name], **usage_stats(counts[name])}
        entry["initialized"] = bool(codebook.initialized.all())
        if codebook.num_segments > 1:
            k = codebook.num_codes
            labels = ["shared", *cfg.sources]
            entry["segments"] = {
                label: usage_stats(counts[name][i * k : (i + 1) * k])["utilization"] for i, label in enumerate(labels)
            }
        per_codebook[name] = entry

    per_level = []
    for level in range(1, cfg.num_levels + 1):
        level_names = [n for n in names if n.endswith(f".{level}")]
        pooled = np.concatenate([counts[n] for n in level_names])
        stats = usage_stats(pooled)
        per_level.append(
            {
                "level": level,
                "kind": cfg.level_kind(level),
                "codebooks": level_names,
                "utilization": stats["utilization"],
                "used": stats["used"],
                "size": int(pooled.size),
                # used over the most that could be used: the level's codes, or its rows when fewer
                "row_bounded_utilization": stats["used"] / max(1, min(int(pooled.size), total_rows)),
                "perplexity": stats["perplexity"],
            }
        )

    return {
        "variant": cfg.variant,
        "num_levels": cfg.num_levels,
        "num_codes": cfg.num_codes,
        "per_level": per_level,
        "per_codebook": per_codebook,
        "per_source": per_source,
        "residual_norm": (norm_sums / max(total_rows, 1)).tolist(),
    }
