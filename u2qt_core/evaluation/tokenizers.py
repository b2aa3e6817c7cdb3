"""Tokenizers of the evaluation: train an MRQ-VAE on in-memory embeddings, tokenize every row,
and turn its codes into user features (bag of codes, mean quantized vectors, t-SNE panels).

Shapes: ``embeddings[source]`` float32 ``[n_rows, d_source]``; ``codes[source]`` int64
``[n_rows, L]``; ``rows_user[source]`` int64 ``[n_rows]`` (row -> user position ``0..n_users-1``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from u2qt_core.config import ModelPreset

__all__ = ["Tokenized", "train_tokenizer", "num_codes", "token_features", "tsne_panels", "pca_per_source"]

log = logging.getLogger(__name__)

_QUANTIZE_BATCH = 4096


@dataclass
class Tokenized:
    """A trained tokenizer (``model``: :class:`u2qt_core.mrqvae.MRQVAE`) and the codes of every
    input row it covers (``codes[source]`` int64 ``[n_rows, L]``)."""

    name: str
    model: Any
    codes: dict[str, np.ndarray]
    metrics: dict
    seconds: float              # wall seconds of training + tokenizing every row
    train_seconds: float = float("nan")       # wall seconds of the training alone
    train_cpu_seconds: float = float("nan")   # process CPU seconds (time.process_time) of the training alone

    @property
    def levels(self) -> int:
        """Codes per row (``L``)."""
        return next(iter(self.codes.values())).shape[1]


def train_tokenizer(name: str, embeddings: dict[str, np.ndarray], preset: ModelPreset) -> Tokenized:
    """Train an MRQ-VAE on the ``embeddings`` of the preset's sources and tokenize every row."""
    import torch

    from u2qt_core.training import train_mrqvae

    started, cpu_started = time.monotonic(), time.process_time()
    data = {s: x for s, x in embeddings.items() if s in preset.mrqvae.sources}
    result = train_mrqvae(data, preset, out_dir=None, progress=True)
    train_seconds, train_cpu = time.monotonic() - started, time.process_time() - cpu_started
    model = result.model.eval()
    codes = {}
    with torch.no_grad():
        for source, x in data.items():
            codes[source] = np.concatenate([model.quantize(torch.from_numpy(x[i:i + _QUANTIZE_BATCH]), source).numpy()
                                            for i in range(0, len(x), _QUANTIZE_BATCH)]).astype(np.int64)
    seconds = time.monotonic() - started
    log.info("tokenizer %s: %d steps in %.0f s", name, result.steps, seconds)
    return Tokenized(name=name, model=model, codes=codes, metrics=result.metrics, seconds=seconds,
                     train_seconds=train_seconds, train_cpu_seconds=train_cpu)


def num_codes(tok: Tokenized) -> int:
    """Size of the code vocabulary actually used (largest code + 1; union codes included)."""
    return max(int(c.max()) for c in tok.codes.values()) + 1 if tok.codes else 1


def token_features(tok: Tokenized, rows_user: dict[str, np.ndarray], n_users: int, sources: list[str], kind: str,
                   bag_transform: str = "log1p"):
    """User features from a tokenizer's codes: ``bag`` of codes (sparse ``[n_users, ...]``), or
    ``vectors`` = per source the mean over the user's days of the quantized vector (sum of the
    selected code vectors), ``[n_users, len(sources) * code_dim]``."""
    import torch

    from u2qt_core.evaluation.representations import bag_of_codes, mean_embeddings

    present = [s for s in sources if s in tok.codes]
    if kind == "bag":
        return bag_of_codes(rows_user, tok.codes, n_users=n_users, sources=present, num_codes=num_codes(tok),
                            transform=bag_transform)
    with torch.no_grad():
        vectors = {s: tok.model.decode_codes(torch.from_numpy(tok.codes[s]), s).numpy() for s in present}
    dim = tok.model.config.code_dim
    return mean_embeddings(rows_user, vectors, n_users=n_users, sources=present, dims={s: dim for s in present})


def tsne_panels(designs: dict[str, Tokenized], embeddings: dict[str, np.ndarray], *, per_source: int,
                perplexity: float, seed: int) -> tuple[dict, dict]:
    """Per-source quantized embeddings (sum of the selected code vectors) of each design,
    ``per_source`` rows per source, in 2-D by t-SNE; also their silhouette by source (on the
    quantized vectors, cosine).  Returns ``({title: (xy [n, 2], labels [n])}, {title: score})``."""
    import torch
    from sklearn.metrics import silhouette_score

    from u2qt_core.evaluation.report import tsne_2d

    rng = np.random.default_rng(seed)
    picks = {s: rng.choice(len(x), size=min(per_source, len(x)), replace=False) for s, x in embeddings.items()}
    panels, scores = {}, {}
    for title, tok in designs.items():
        vecs, labels = [], []
        with torch.no_grad():
            for source in sorted(picks):
                if source not in tok.codes:
                    continue
                codes = torch.from_numpy(tok.codes[source][picks[source]])
                vecs.append(tok.model.decode_codes(codes, source).numpy())
                labels += [source] * len(codes)
        x, labels = np.concatenate(vecs), np.asarray(labels)
        scores[title] = float(silhouette_score(x, labels, metric="cosine"))
        panels[title] = (tsne_2d(x, perplexity=perplexity, seed=seed), labels)
    return panels, scores


def pca_per_source(x: dict[str, np.ndarray], dims: int, seed: int) -> dict[str, np.ndarray]:
    """Each source's rows projected on its first ``dims`` principal components (sources with at
    most ``dims`` columns are kept as they are)."""
    from sklearn.decomposition import PCA

    return {s: (PCA(n_components=dims, random_state=seed).fit_transform(v) if v.shape[1] > dims else v)
            for s, v in x.items()}
