"""Codebook-design and source ablations (FOUNDv2 tables 3 and 4): retrain the tokenizer per
design / without each source, probe the users' token features.

The caller supplies ``make_preset(steps=..., mrqvae=..., drop_source=...)`` (the pipeline builds
presets from its sources config) and ``probe(features) -> {"tasks", "avg_auc", "avg_ks", "dim"}``.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np

from u2qt_core.config import ModelPreset
from u2qt_core.evaluation.config import EvalConfig
from u2qt_core.evaluation.tokenizers import Tokenized, token_features, train_tokenizer

__all__ = ["PresetFactory", "codebook_ablation", "source_ablation", "matching_design"]

log = logging.getLogger(__name__)

#: ``make_preset(steps=int, mrqvae=dict | None, drop_source=str | None) -> ModelPreset``
PresetFactory = Callable[..., ModelPreset]
Probe = Callable[[Any], dict]


def _probe_tokens(tok: Tokenized, rows_user: dict[str, np.ndarray], n_users: int, sources: list[str],
                  cfg: EvalConfig, probe: Probe) -> dict:
    return probe(token_features(tok, rows_user, n_users, sources, cfg.ablations.representation, cfg.probe.bag_transform))


def codebook_ablation(cfg: EvalConfig, make_preset: PresetFactory, embeddings: dict[str, np.ndarray], *,
                      rows_user: dict[str, np.ndarray], n_users: int, sources: list[str],
                      probe: Probe) -> tuple[list[dict], dict[str, Tokenized]]:
    """Every configured codebook design trained for ``ablations.steps`` and probed
    (``ablations.representation``, C fixed per task by ``probe``).
    Returns the table rows and the trained tokenizers by design name."""
    from tqdm.auto import tqdm

    rows, trained = [], {}
    for design in tqdm(cfg.ablations.codebook_designs, desc="codebook designs"):
        preset = make_preset(steps=cfg.ablations.steps, mrqvae={
            "variant": design.variant, "shared_levels": design.shared_levels, "specific_levels": design.specific_levels,
            "num_codes": design.num_codes, "code_dim": design.code_dim})
        tok = train_tokenizer(design.name, embeddings, preset)
        trained[design.name] = tok
        util = [e["utilization"] for e in tok.metrics["per_codebook"].values()]
        cos = [e["recon_cosine"] for e in tok.metrics["per_source"].values()]
        rows.append({"name": design.name, "volume": f"{design.num_codes}x{design.code_dim}",
                     "levels": design.shared_levels + design.specific_levels, "variant": design.variant,
                     "min_utilization": float(min(util)), "recon_cosine": float(np.mean(cos)),
                     "train_seconds": round(tok.seconds, 1),
                     **_probe_tokens(tok, rows_user, n_users, sources, cfg, probe)})
        log.info("design %s: avg AUC %.4f KS %.4f", design.name, rows[-1]["avg_auc"], rows[-1]["avg_ks"])
    return rows, trained


def source_ablation(cfg: EvalConfig, make_preset: PresetFactory, embeddings: dict[str, np.ndarray], *,
                    rows_user: dict[str, np.ndarray], n_users: int, sources: list[str], probe: Probe,
                    all_sources_row: dict | None) -> list[dict]:
    """Retrain the tokenizer without each source in turn and probe the tokens of the other sources."""
    from tqdm.auto import tqdm

    rows = []
    if all_sources_row is not None:
        rows.append({"name": "All sources", **{k: all_sources_row[k] for k in ("tasks", "avg_auc", "avg_ks", "dim")}})
    for source in tqdm(sources, desc="source ablation"):
        preset = make_preset(steps=cfg.ablations.steps, drop_source=source)
        tok = train_tokenizer(f"without {source}", {s: x for s, x in embeddings.items() if s != source}, preset)
        rows.append({"name": f"(-) {source}", "train_seconds": round(tok.seconds, 1),
                     **_probe_tokens(tok, rows_user, n_users, [s for s in sources if s != source], cfg, probe)})
        log.info("without %s: avg AUC %.4f KS %.4f", source, rows[-1]["avg_auc"], rows[-1]["avg_ks"])
    return rows


def matching_design(rows: list[dict], *, variant: str, levels: int, num_codes: int, code_dim: int) -> dict | None:
    """The ablation row with the main tokenizer's design, if one was configured."""
    return next((r for r in rows if r["variant"] == variant and r["levels"] == levels
                 and r["volume"] == f"{num_codes}x{code_dim}"), None)
