"""Code distributions of a tokenizer and how far another distribution has drifted from them.

At training, :func:`training_code_stats` quantizes the training sample once more and keeps, per
source and level, the code histogram, the number of codes the source may emit there, the "top"
codes (the most frequent covering ``top_mass`` of the sample), the share of documents whose codes
are all top codes, and the sample's relative residual norm ``||r^{L+1}|| / ||z||``. The bundle
stores it as ``code_stats.json`` (:mod:`u2qt_core.bundle`); a night compares its own histograms
with it (:func:`psi`, :func:`js_divergence`, :func:`perplexity`), and asks how much of the
divergence sampling alone explains (:func:`sampling_noise`): PSI over K bins between two samples
of one distribution is about ``(K - 1) (1/n + 1/N)``, so a source with 150 documents and 256 codes
"drifts" by 1.7 on a night when nothing moved.

Histograms are sparse ``{code: count}`` dicts: a ``union`` level spans several blocks of K codes.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, NamedTuple

import numpy as np

__all__ = ["STATS_FILE", "FORMAT", "training_code_stats", "top_codes", "psi", "js_divergence", "perplexity",
           "sampling_noise", "SamplingNoise"]

STATS_FILE = "code_stats.json"
FORMAT = 1


def _divergences(p_counts: np.ndarray, q_counts: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """PSI and JS (bits) of count arrays ``p_counts`` (training) and ``q_counts`` [..., K], over
    the bins either uses: each side as probabilities there (uniform if it has no counts), every bin
    at least ``floor``, renormalised. Returns ``(psi [...], js [...])``."""
    seen = (p_counts > 0) | (q_counts > 0)
    sides = []
    for v in np.broadcast_arrays(np.asarray(p_counts, dtype=np.float64), np.asarray(q_counts, dtype=np.float64)):
        total = v.sum(axis=-1, keepdims=True)
        prob = np.where(total > 0, v / np.where(total > 0, total, 1.0), 1.0)     # no counts: uniform
        prob = np.where(seen, np.maximum(prob, floor), 0.0)
        sides.append(prob / prob.sum(axis=-1, keepdims=True))
    p, q = sides
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):          # unused bins: 0 * log(0/0), dropped
        psi_ = np.where(seen, (q - p) * np.log(q / p), 0.0).sum(axis=-1)
        js = (0.5 * np.where(seen, p * np.log2(p / m), 0.0) + 0.5 * np.where(seen, q * np.log2(q / m), 0.0)).sum(axis=-1)
    return psi_, js


def _dense(train: Mapping[int, float], night: Mapping[int, float]) -> tuple[np.ndarray, np.ndarray]:
    """Both sparse histograms as count arrays over the union of their codes: ``(p [n], q [n])``."""
    codes = sorted(set(train) | set(night))
    return (np.array([float(train.get(c, 0)) for c in codes]), np.array([float(night.get(c, 0)) for c in codes]))


def psi(train: Mapping[int, float], night: Mapping[int, float], floor: float = 1e-4) -> float:
    """Population stability index ``sum (q - p) ln(q / p)`` (0: the same distribution; > 0.25 is
    the usual "shifted"), empty bins floored at ``floor``."""
    return float(_divergences(*_dense(train, night), floor)[0])


def js_divergence(train: Mapping[int, float], night: Mapping[int, float], floor: float = 1e-4) -> float:
    """Jensen-Shannon divergence in bits, in [0, 1] (0: the same distribution)."""
    return float(_divergences(*_dense(train, night), floor)[1])


class SamplingNoise(NamedTuple):
    """The divergences two samples of ONE distribution reach at a quantile: what a night of that
    size shows when nothing moved."""

    psi: float
    js: float


def sampling_noise(train: Mapping[int, float], documents: int, allowed: int | None = None, floor: float = 1e-4,
                   quantile: float = 0.99, draws: int = 200, seed: int = 0) -> SamplingNoise:
    """PSI and JS against ``train`` (as :func:`psi` / :func:`js_divergence` compute them, same
    floor) that a night of ``documents`` documents reaches at ``quantile`` when nothing moved.

    Simulated, ``draws`` seeded times: the source's true code distribution is drawn from a
    Dirichlet around the training histogram -- its counts on the codes it saw, and on the unseen
    ones among the ``allowed`` codes the Good-Turing missing mass (singletons / N, at most one
    half), spread evenly: a finite sample misses rare codes, about as many as it saw once -- then a
    night of ``documents`` from it. Cost ``O(draws * allowed)`` on the driver, whatever the night's
    size; the result falls as ``(K - 1) (1/documents + 1/N)``: near 0 on a production night, 1-4 on
    the demo's nights of 60-150 documents over 256 codes. (Half a count on every allowed code, tried
    first, put a quarter of the mass on unseen codes for a training sample of 200 documents and
    returned 3-6 there, above the PSI of a night whose half had moved.)"""
    seen_counts = np.array([float(v) for _, v in sorted(train.items())])
    if documents <= 0 or seen_counts.sum() <= 0:
        return SamplingNoise(0.0, 0.0)
    total, unseen = seen_counts.sum(), max(int(allowed or 0) - len(seen_counts), 0)
    counts = np.concatenate([seen_counts, np.zeros(unseen)])                                  # [K]
    alpha = counts.copy()
    if unseen:
        missing = min(float((seen_counts == 1).sum()) / total, 0.5)    # Good-Turing: P(a new draw is unseen)
        alpha[len(seen_counts):] = missing / (1.0 - missing) * total / unseen
    rng = np.random.default_rng(seed)
    nights = rng.multinomial(int(documents), rng.dirichlet(np.maximum(alpha, 1e-3), size=draws))   # [draws, K]
    psis, jss = _divergences(counts, nights, floor)                   # [draws] each, as psi() / js_divergence()
    return SamplingNoise(float(np.quantile(psis, quantile)), float(np.quantile(jss, quantile)))


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
