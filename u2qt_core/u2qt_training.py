"""Training of the U²QT-AAAI tokenizer (:class:`~u2qt_core.u2qt_model.U2QTTokenizer`) end to end.

Data: a :class:`SequenceSample`, ``N`` user-days with every source's sequence kept ragged
(``values [total_elements, d_in]`` plus ``offsets [N + 1]`` per source), so memory is the sample's
real size, not ``N x max_len``. Each step draws ``train.batch_size`` user-days, pads each source
to the batch's longest sequence (:func:`~u2qt_core.u2qt_model.pad_sequences`) and minimises
``L_re + L_rq`` (AdamW, gradient clipping, dead-code resets every ``dead_code_window`` steps, as
FOUNDv2's loop). The MRQ-VAE's codebooks start from k-means of their first residuals (the
warm-up of :mod:`u2qt_core.mrqvae`); any not initialised when the steps end are initialised from
the whole sample's pooled vectors. No mid-training checkpoints: a crash restarts the training
(the sample is seeded, so it is the same training).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from u2qt_core.config import ModelPreset
from u2qt_core.errors import InputError, TrainingDivergedError
from u2qt_core.mrqvae import MRQVAE
from u2qt_core.training import TrainResult, finish_initialisation, resolve_device
from u2qt_core.u2qt_model import SequenceBatch, U2QTTokenizer, pad_sequences

__all__ = ["SequenceSample", "train_u2qt", "pooled_inputs"]

log = logging.getLogger(__name__)


@dataclass
class SequenceSample:
    """``N`` user-days' source sequences, ragged.

    ``values[s]``: float32 ``[total_s, d_in_s]`` (every user-day's elements of source ``s`` one after
    the other); ``offsets[s]``: int64 ``[N + 1]``, user-day ``i`` holds rows
    ``offsets[i]:offsets[i+1]`` (empty: the user-day has no ``s``)."""

    values: dict[str, np.ndarray]
    offsets: dict[str, np.ndarray]

    @classmethod
    def from_user_days(cls, user_days: list[dict[str, np.ndarray]], input_dims: dict[str, int]) -> "SequenceSample":
        """From a list of ``{source: [T, d_in]}`` (a source absent from a dict: not that day)."""
        values, offsets = {}, {}
        for source, width in input_dims.items():
            parts = [np.asarray(d[source], dtype=np.float32).reshape(-1, width) if source in d
                     else np.zeros((0, width), np.float32) for d in user_days]
            values[source] = np.concatenate(parts) if parts else np.zeros((0, width), np.float32)
            offsets[source] = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
        return cls(values, offsets)

    def __len__(self) -> int:
        return len(next(iter(self.offsets.values()))) - 1

    def sequence(self, source: str, i: int) -> np.ndarray | None:
        start, stop = self.offsets[source][i], self.offsets[source][i + 1]
        return self.values[source][start:stop] if stop > start else None

    def counts(self) -> dict[str, int]:
        """User-days holding each source."""
        return {s: int((np.diff(o) > 0).sum()) for s, o in self.offsets.items()}

    def batch(self, rows: np.ndarray, max_len: int, device: torch.device | str = "cpu") -> SequenceBatch:
        """The user-days ``rows`` as a padded :class:`SequenceBatch`."""
        inputs, masks = {}, {}
        for source, values in self.values.items():
            x, m = pad_sequences([self.sequence(source, int(i)) for i in rows], values.shape[1], max_len)
            inputs[source], masks[source] = x.to(device), m.to(device)
        return SequenceBatch(inputs, masks)


def _check_sample(sample: SequenceSample, preset: ModelPreset) -> None:
    dims = preset.u2qt.input_dims
    for source, values in sample.values.items():
        if source not in dims:
            raise InputError(f"unknown source {source!r} in the sample; known sources: {sorted(dims)}")
        if values.ndim != 2 or values.shape[1] != dims[source]:
            raise InputError(f"source {source!r}: expected elements of width {dims[source]}, got {list(values.shape)}")
        bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
        if bad.size:
            raise InputError(f"source {source!r}: non-finite value (NaN/inf) in element {int(bad[0])}")
    if len(sample) == 0 or not any(sample.counts().values()):
        raise InputError("no training user-days: every source is empty")


@torch.no_grad()
def pooled_inputs(model: U2QTTokenizer, sample: SequenceSample, batch_size: int = 256) -> dict[str, np.ndarray]:
    """The MRQ-VAE inputs of every user-day holding each source: ``{s: float32 [n_s, pooled_dim]}``
    in user-day order (eval mode), what codebook metrics and code statistics are computed on."""
    model.eval()
    device = next(model.parameters()).device
    out: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(sample), batch_size):
        batch = sample.batch(np.arange(start, min(start + batch_size, len(sample))), model.frontend_config.max_len, device)
        for source, vectors in model.pooled(batch).items():
            out.setdefault(source, []).append(vectors[batch.present(source)].cpu().numpy())
    return {s: np.concatenate(parts) for s, parts in out.items() if sum(len(p) for p in parts)}


def train_u2qt(sample: SequenceSample, preset: ModelPreset, *, progress: bool = True) -> TrainResult:
    """Train a :class:`U2QTTokenizer` of ``preset`` (``architecture: u2qt_aaai``) on ``sample``.

    Raises :class:`InputError` for bad inputs, :class:`TrainingDivergedError` naming the 1-based
    step on a non-finite loss or gradient. ``TrainResult.model`` is the whole tokenizer (eval mode)."""
    if preset.u2qt is None:
        raise InputError("train_u2qt needs a preset with architecture: u2qt_aaai and a u2qt: section")
    _check_sample(sample, preset)
    cfg, train_cfg = preset.mrqvae, preset.train
    device = resolve_device(train_cfg.device)
    torch.manual_seed(train_cfg.seed)
    rng = np.random.default_rng(train_cfg.seed)
    model = U2QTTokenizer(preset.u2qt, MRQVAE(cfg)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    batch_size = min(train_cfg.batch_size, len(sample))
    log.info("training U²QT-AAAI (%d Q-Former layers, %d queries, %d levels, K=%d) on %s: %d user-days %s, "
             "%d steps of %d", preset.u2qt.qformer_layers, preset.u2qt.num_queries, cfg.num_levels, cfg.num_codes,
             device, len(sample), sample.counts(), train_cfg.steps, batch_size)
    history: list[dict[str, Any]] = []
    model.train()
    bar = tqdm(total=train_cfg.steps, disable=not progress, desc="u2qt", leave=False)
    try:
        for step in range(1, train_cfg.steps + 1):
            rows = rng.choice(len(sample), size=batch_size, replace=False)
            out = model(sample.batch(rows, preset.u2qt.max_len, device))
            loss_value = float(out.loss.detach())
            if not math.isfinite(loss_value):
                raise TrainingDivergedError(f"step {step}: loss is {loss_value}; lower train.lr or check the inputs")
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            if train_cfg.grad_clip > 0:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip))
                if not math.isfinite(grad_norm):
                    raise TrainingDivergedError(f"step {step}: gradient norm is {grad_norm}; lower train.lr")
            optimizer.step()
            reset = model.mrqvae.reset_dead_codes(optimizer) if cfg.dead_code_window and step % cfg.dead_code_window == 0 else {}
            if step % train_cfg.log_every == 0 or step == train_cfg.steps:
                entry = {"step": step, "loss": loss_value, "recon_loss": float(out.recon_loss.detach()),
                         "rq_loss": float(out.rq_loss.detach()),
                         "uninitialized_codebooks": len(model.mrqvae.uninitialized_codebooks()),
                         "dead_codes_reset": int(sum(reset.values()))}
                history.append(entry)
                log.info("step %d loss %.5f recon %.5f rq %.5f", step, entry["loss"], entry["recon_loss"], entry["rq_loss"])
                bar.set_postfix(loss=f"{loss_value:.4f}")
            bar.update(1)
    finally:
        bar.close()
    pooled = pooled_inputs(model, sample)
    finish_initialisation(model.mrqvae, {s: torch.from_numpy(x) for s, x in pooled.items()}, train_cfg.batch_size, device)
    model.eval()
    return TrainResult(model=model, steps=train_cfg.steps, history=history)
