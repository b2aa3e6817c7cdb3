"""Pretext-task ablation of the multi-scale alignment model (FOUNDv2 table 5): train the sequence
model on the users' token histories with each task set and probe the fused user embeddings.

Shapes: ``codes[source]`` int64 ``[n_rows, L]``, ``rows_user[source]`` / ``days[source]``
``[n_rows]``, ``text_embeddings`` float32 ``[n_users, d_text]`` (the frozen encoder's embedding
of each user's templated future description, eq. 13).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import numpy as np

from u2qt_core.evaluation.config import AlignmentSettings
from u2qt_core.evaluation.tokenizers import Tokenized

__all__ = ["TASK_WEIGHTS", "alignment_ablation"]

log = logging.getLogger(__name__)

#: Loss weight of each pretext task when it is in the task set: T(oken), W(indow), S(emantic).
TASK_WEIGHTS = {"T": 0.2, "W": 0.4, "S": 0.4}


def alignment_ablation(main: Tokenized, settings: AlignmentSettings, *, rows_user: dict[str, np.ndarray],
                       days: dict[str, np.ndarray], n_users: int, sources: list[str], cutoff_day: int,
                       text_embeddings: np.ndarray, seed: int, probe: Callable[[Any], dict]) -> dict:
    """``{task_set: {"steps", "final_loss", "train_seconds", **probe(fused)}}`` for ``none`` (the
    same model, random weights) and each of ``settings.task_sets``.

    Training histories stop at ``cutoff_day`` (inclusive); probes embed the full histories.
    """
    import torch
    from tqdm.auto import tqdm

    from u2qt_core.alignment import AlignmentConfig, AlignmentTrainer
    from u2qt_core.alignment.codebooks import ScaledCodebook, rms_scale
    from u2qt_core.evaluation.representations import token_histories

    a = settings
    hist_args = dict(n_users=n_users, sources=sources, max_steps=a.max_steps_per_user)
    train_hist = token_histories(rows_user, days, main.codes, max_day=cutoff_day, **hist_args)
    full_hist = token_histories(rows_user, days, main.codes, **hist_args)
    active = np.flatnonzero(train_hist.mask.any(dim=1).numpy())
    scaled = ScaledCodebook(main.model, rms_scale(main.model, main.codes, a.token_rms))
    log.info("alignment: codebook vectors scaled by %.1f to RMS %.1f", scaled.scale, a.token_rms)
    results = {}
    for task_set in tqdm(["none", *a.task_sets], desc="alignment task sets"):
        parts = set(task_set.split("+")) if task_set != "none" else set()
        acfg = AlignmentConfig(
            **a.model_dump(include=set(AlignmentConfig.model_fields) - {"max_tokens", "steps", "seed", "device",
                                                                          "progress", "log_every", "lambda_token",
                                                                          "lambda_window", "lambda_semantic"}),
            max_tokens=a.max_steps_per_user * main.levels, steps=a.steps if parts else 0,
            seed=seed, device="cpu", progress=False, log_every=max(a.steps // 3, 1),
            lambda_token=TASK_WEIGHTS["T"] if "T" in parts else 0.0,
            lambda_window=TASK_WEIGHTS["W"] if "W" in parts else 0.0,
            lambda_semantic=TASK_WEIGHTS["S"] if "S" in parts else 0.0,
        )
        started = time.monotonic()
        trainer = AlignmentTrainer(scaled, train_hist.select(active), acfg,
                                   text_embeddings=text_embeddings[active] if "S" in parts else None)
        history = trainer.fit()
        with torch.no_grad():
            fused = trainer.embed_users(full_hist)
        results[task_set] = {
            "steps": acfg.steps, "final_loss": history[-1]["total"] if history else None,
            "train_seconds": round(time.monotonic() - started, 1), **probe(fused),
        }
        log.info("alignment %s: avg AUC %.4f KS %.4f (%.0f s)", task_set, results[task_set]["avg_auc"],
                 results[task_set]["avg_ks"], results[task_set]["train_seconds"])
    return results
