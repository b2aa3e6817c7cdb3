"""Code distributions of a tokenizer and how far another distribution has drifted from them.

At training, :func:`training_code_stats` quantizes the training sample once more and keeps, per
source and level, the code histogram, the number of codes the source may emit there, the "top"
codes (the most frequent covering ``top_mass`` of the sample), the share of documents whose codes
are all top codes, and the sample's relative residual norm ``||r^{L+1}|| / ||z||``. The bundle
stores it as ``code_stats.json`` (:mod:`u2qt_core.bundle`); a night compares its own histograms
with it (:func:`psi`, :func:`js_divergence`, :func:`perplexity`).

Histograms are sparse ``{code: count}`` dicts: a ``union`` level spans several blocks of K codes.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

__all__ = ["STATS_FILE", "FORMAT", "training_code_stats", "top_codes", "psi", "js_divergence", "perplexity",
           "aligned"]

STATS_FILE = "code_stats.json"
FORMAT = 1


def aligned(train: Mapping[int, float], night: Mapping[int, float], floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Both histograms as probability vectors over the union of their codes, every bin at least
    ``floor`` (then renormalised): ``(p [n], q [n])``, p the training one."""
    codes = sorted(set(train) | set(night))
    p = np.array([float(train.get(c, 0)) for c in codes])
    q = np.array([float(night.get(c, 0)) for c in codes])
    out = []
    for v in (p, q):
        v = v / v.sum() if v.sum() > 0 else np.full(len(v), 1.0 / max(len(v), 1))
        v = np.maximum(v, floor)
        out.append(v / v.sum())
    return out[0], out[1]


def psi(train: Mapping[int, float], night: Mapping[int, float], floor: float = 1e-4) -> float:
    """Population stability index ``sum (q - p) ln(q / p)`` (0: the same distribution; > 0.25 is
    the usual "shifted"), empty bins floored at ``floor``."""
    p, q = aligned(train, night, floor)
    return float(np.sum((q - p) * np.log(q / p)))


def js_divergence(train: Mapping[int, float], night: Mapping[int, float], floor: float = 1e-4) -> float:
    """Jensen-Shannon divergence in bits, in [0, 1] (0: the same distribution)."""
    p, q = aligned(train, night, floor)
    m = 0.5 * (p + q)
    return float(0.5 * np.sum(p * np.log2(p / m)) + 0.5 * np.sum(q * np.log2(q / m)))


def perplexity(counts: Mapping[int, float]) -> float:
    """``exp(entropy)`` of a histogram: the number of equally used codes it is worth (0 if empty)."""
    n = np.array([float(v) for v in counts.values() if v > 0])
    if not n.size:
        return 0.0
    prob = n / n.sum()
    return float(math.exp(-np.sum(prob * np.log(prob))))


def top_codes(counts: Mapping[int, float], mass: float) -> list[int]:
    """The most frequent codes whose counts cover at least ``mass`` of the total (ties by code)."""
    total = float(sum(counts.values()))
    out, covered = [], 0.0
    for code, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if total and covered >= mass * total:
            break
        out.append(int(code))
        covered += float(count)
    return out


def training_code_stats(model, inputs: Mapping[str, np.ndarray], top_mass: float = 0.9,
                        batch_rows: int = 4096) -> dict[str, Any]:
    """The code statistics of ``model`` (an :class:`u2qt_core.mrqvae.MRQVAE`) on its training
    sample ``{source: float32 [n, input_dim]}``, as stored in a bundle's ``code_stats.json``."""
    import torch

    sources: dict[str, Any] = {}
    for source, x in inputs.items():
        if not len(x):
            continue
        parts = [model.quantize_measured(torch.from_numpy(np.ascontiguousarray(x[i:i + batch_rows], dtype=np.float32)),
                                         source) for i in range(0, len(x), batch_rows)]
        codes = torch.cat([c for c, _ in parts]).cpu().numpy()            # [n, L]
        residual = torch.cat([r for _, r in parts]).cpu().numpy()         # [n]
        levels, in_top = [], np.ones(len(codes), dtype=bool)
        for level, codebook in enumerate(model.route(source)):
            values, counts = np.unique(codes[:, level], return_counts=True)
            hist = {int(v): int(c) for v, c in zip(values, counts)}
            top = top_codes(hist, top_mass)
            in_top &= np.isin(codes[:, level], top)
            allowed = sum(stop - start for start, stop in codebook.segment_ranges(source))
            levels.append({"level": level + 1, "allowed": int(allowed), "top": top,
                           "counts": {str(k): v for k, v in hist.items()}})
        sources[source] = {"documents": int(len(codes)), "residual_mean": float(residual.mean()),
                           "residual_p95": float(np.quantile(residual, 0.95)),
                           "top_code_share": float(in_top.mean()), "levels": levels}
    return {"format": FORMAT, "top_mass": top_mass, "sources": sources}
