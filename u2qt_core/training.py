"""Training loop of the MRQ-VAE tokenizer: mixed-source batches, AdamW, checkpoints, resume.

Each step samples one batch mixing all sources present, each proportional to its row count with
at least one row per source, and minimises the mean over sources of ``L_re + L_rq`` (FOUNDv2
eqs. 7-8).  Every ``dead_code_window`` steps dead codes are reset (optimiser moments included).

Checkpoints (when ``out_dir`` is given) live in ``out_dir/checkpoints/step_NNNNNNN/``: the
tokenizer files of :func:`u2qt_core.checkpoint.save_tokenizer` plus ``train_state.safetensors``
(optimiser tensors, RNG states, codebook training state) and ``train_state.json`` (step, history,
optimiser hyper-parameters, numpy/python RNG states): no pickle anywhere.
``out_dir/checkpoints/LATEST`` names the newest; the two newest are kept.  At the end the
tokenizer is also written to ``out_dir/tokenizer/`` and the metrics to ``out_dir/metrics.json``.
With ``resume=True`` training continues from ``LATEST`` and, on CPU, reproduces an uninterrupted
run exactly.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from u2qt_core.checkpoint import canonical_config_json, load_tokenizer, read_tokenizer_config, save_tokenizer
from u2qt_core.config import ModelPreset
from u2qt_core.errors import CheckpointError, InputError, TrainingDivergedError
from u2qt_core.metrics import codebook_metrics
from u2qt_core.mrqvae import MRQVAE, mean_loss

__all__ = ["TrainResult", "TrainingDivergedError", "train_mrqvae", "allocate_batch", "resolve_device"]

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
LATEST_FILE = "LATEST"
STATE_TENSORS = "train_state.safetensors"
STATE_JSON = "train_state.json"
KEEP_CHECKPOINTS = 2


@dataclass
class TrainResult:
    """Outcome of :func:`train_mrqvae`."""

    model: MRQVAE
    steps: int
    history: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; other names as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def allocate_batch(batch_size: int, counts: dict[str, int]) -> dict[str, int]:
    """Rows per source for one batch: proportional to ``counts`` (largest remainder), >= 1 each.

    Sources with zero rows are left out.  If ``batch_size`` is smaller than the number of sources
    the batch grows to one row per source.
    """
    present = {s: n for s, n in counts.items() if n > 0}
    total = sum(present.values())
    if not present:
        return {}
    quotas = {s: batch_size * n / total for s, n in present.items()}
    alloc = {s: max(1, math.floor(q)) for s, q in quotas.items()}
    spare = batch_size - sum(alloc.values())
    if spare > 0:
        by_remainder = sorted(present, key=lambda s: (-(quotas[s] - math.floor(quotas[s])), list(present).index(s)))
        for s in by_remainder[:spare]:
            alloc[s] += 1
    return alloc


def _validate_embeddings(embeddings: dict[str, np.ndarray], preset: ModelPreset) -> dict[str, torch.Tensor]:
    cfg = preset.mrqvae
    data: dict[str, torch.Tensor] = {}
    for source, array in embeddings.items():
        if source not in cfg.sources:
            raise InputError(f"unknown source {source!r} in embeddings; known sources: {cfg.sources}")
        arr = np.asarray(array)
        dim = cfg.input_dims[source]
        if arr.ndim != 2 or arr.shape[1] != dim:
            raise InputError(f"source {source!r}: expected an array of shape [N, {dim}], got {list(arr.shape)}")
        if not np.issubdtype(arr.dtype, np.floating):
            raise InputError(f"source {source!r}: expected floating-point values, got dtype {arr.dtype}")
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
        if bad.size:
            raise InputError(f"source {source!r}: non-finite value (NaN/inf) in row {int(bad[0])}")
        if arr.shape[0]:
            data[source] = torch.from_numpy(arr)
    if not data:
        raise InputError("no training rows: every source is empty or missing")
    missing = [s for s in cfg.sources if s not in data]
    if missing:
        logger.warning("no rows for sources %s: their codebooks cannot be trained", missing)
    return data


def _seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------- checkpoints
def _checkpoint_root(out_dir: Path) -> Path:
    return out_dir / CHECKPOINT_DIR


def _optimizer_to_safe(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, param_state in state["state"].items():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"opt.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_from_safe(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    per_param: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("opt."):
            _, index, key = name.split(".", 2)
            per_param.setdefault(int(index), {})[key] = value
    for index, values in meta.get("scalars", {}).items():
        per_param.setdefault(int(index), {}).update(values)
    groups = []
    for group in meta["param_groups"]:
        group = dict(group)
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    optimizer.load_state_dict({"state": per_param, "param_groups": groups})


def _save_checkpoint(
    out_dir: Path,
    step: int,
    model: MRQVAE,
    optimizer: torch.optim.Optimizer,
    sampler: torch.Generator,
    history: list[dict[str, Any]],
) -> Path:
    root = _checkpoint_root(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:07d}"
    final = root / name
    tmp = root / f".{name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    save_tokenizer(model, tmp, extra={"step": step})
    tensors, opt_meta = _optimizer_to_safe(optimizer)
    tensors.update({f"model.{k}": v.detach().cpu().contiguous() for k, v in model.training_state().items()})
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.sampler"] = sampler.get_state()
    save_file(tensors, str(tmp / STATE_TENSORS))
    np_state = np.random.get_state()
    py_state = random.getstate()
    meta = {
        "step": step,
        "history": history,
        "optimizer": opt_meta,
        "rng_numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "rng_python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    (tmp / STATE_JSON).write_text(json.dumps(meta), encoding="utf-8")
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    latest_tmp = root / f"{LATEST_FILE}.tmp"
    latest_tmp.write_text(name + "\n", encoding="utf-8")
    latest_tmp.replace(root / LATEST_FILE)
    for old in sorted(p for p in root.glob("step_*") if p.is_dir())[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old)
    logger.info("checkpoint at step %d -> %s", step, final)
    return final


def _latest_checkpoint(out_dir: Path) -> Path | None:
    pointer = _checkpoint_root(out_dir) / LATEST_FILE
    if not pointer.is_file():
        return None
    path = _checkpoint_root(out_dir) / pointer.read_text(encoding="utf-8").strip()
    if not path.is_dir():
        raise CheckpointError(f"{pointer}: names {path.name!r}, which does not exist")
    return path


def _load_checkpoint(
    path: Path, preset: ModelPreset, device: torch.device, sampler: torch.Generator
) -> tuple[MRQVAE, torch.optim.Optimizer, int, list[dict[str, Any]]]:
    stored_config, _ = read_tokenizer_config(path)
    if canonical_config_json(stored_config) != canonical_config_json(preset.mrqvae):
        old, new = stored_config.model_dump(), preset.mrqvae.model_dump()
        changed = sorted(k for k in new if old.get(k) != new.get(k))
        raise CheckpointError(f"{path}: checkpoint was trained with a different mrqvae config (keys: {changed})")
    model, _ = load_tokenizer(path, map_location=str(device))
    model.train()
    for name in (STATE_TENSORS, STATE_JSON):
        if not (path / name).is_file():
            raise CheckpointError(f"{path / name}: missing training state file")
    tensors = load_file(str(path / STATE_TENSORS), device="cpu")
    try:
        meta = json.loads((path / STATE_JSON).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path / STATE_JSON}: unreadable: {exc}") from exc
    model.load_training_state({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
    optimizer = _make_optimizer(model, preset)
    try:
        _optimizer_from_safe(optimizer, tensors, meta["optimizer"])
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{path}: optimizer state does not match the model: {exc}") from exc
    torch.set_rng_state(tensors["rng.torch"])
    sampler.set_state(tensors["rng.sampler"])
    kind, keys, pos, has_gauss, cached = meta["rng_numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = meta["rng_python"]
    random.setstate((version, tuple(internal), gauss_next))
    return model, optimizer, int(meta["step"]), list(meta["history"])


def _make_optimizer(model: MRQVAE, preset: ModelPreset) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=preset.train.lr, weight_decay=preset.train.weight_decay)


# ---------------------------------------------------------------------- training
def _sample_batch(
    data: dict[str, torch.Tensor], alloc: dict[str, int], sampler: torch.Generator, device: torch.device
) -> dict[str, torch.Tensor]:
    batch = {}
    for source, rows in alloc.items():
        index = torch.randint(0, data[source].shape[0], (rows,), generator=sampler)
        batch[source] = data[source][index].to(device, non_blocking=True)
    return batch


def finish_initialisation(model: MRQVAE, data: dict[str, torch.Tensor], batch_size: int, device: torch.device) -> None:
    """Feed the training rows (no gradients) until every codebook a present source uses is initialised.

    Only needed when training stopped before some k-means buffers filled; the buffer rule
    (>= multiple * K residuals, never fewer than K) still applies.
    """
    pending = [name for name in model.uninitialized_codebooks()]
    if not pending:
        return
    logger.warning("codebooks %s were not initialised during training; initialising them from the data", pending)
    cfg = model.config
    min_rows = min(x.shape[0] for x in data.values())
    needed = cfg.kmeans_buffer_multiple * cfg.num_codes
    max_passes = cfg.num_levels * (math.ceil(needed / min_rows) + 1)
    model.train()
    with torch.no_grad():
        for _ in range(max_passes):
            if not any(
                not cb.is_ready(s) for s in data for cb in model.route(s)
            ):
                break
            for source, x in data.items():
                for start in range(0, x.shape[0], batch_size):
                    model(x[start : start + batch_size].to(device), source)
    left = model.uninitialized_codebooks()
    if left:
        logger.warning("codebooks %s are still uninitialised (no rows for the sources they serve)", left)


def train_mrqvae(
    embeddings: dict[str, np.ndarray],
    preset: ModelPreset,
    *,
    out_dir: Path | None = None,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train an MRQ-VAE tokenizer on per-source inputs.

    ``embeddings[source]``: float32 [N_source, input_dims[source]] (raw features for tabular
    sources).  Raises :class:`InputError` for bad inputs, :class:`TrainingDivergedError` naming
    the 1-based step on a non-finite loss or gradient, :class:`CheckpointError` on a bad resume.
    """
    cfg, train_cfg = preset.mrqvae, preset.train
    data = _validate_embeddings(embeddings, preset)
    device = resolve_device(train_cfg.device)
    sampler = _seed_everything(train_cfg.seed)
    out_dir = Path(out_dir) if out_dir is not None else None

    start_step, history = 0, []
    checkpoint = _latest_checkpoint(out_dir) if (out_dir is not None and resume) else None
    if checkpoint is not None:
        model, optimizer, start_step, history = _load_checkpoint(checkpoint, preset, device, sampler)
        logger.info("resuming from %s (step %d)", checkpoint, start_step)
    else:
        if resume:
            logger.info("resume requested but no checkpoint in %s; starting from scratch", out_dir)
        if out_dir is not None and _checkpoint_root(out_dir).exists():
            logger.warning("removing stale checkpoints in %s", _checkpoint_root(out_dir))
            shutil.rmtree(_checkpoint_root(out_dir))
        model = MRQVAE(cfg).to(device)
        model.fit_tabular_scaling(data)       # on every training row, before the first step
        optimizer = _make_optimizer(model, preset)

    alloc = allocate_batch(train_cfg.batch_size, {s: x.shape[0] for s, x in data.items()})
    logger.info(
        "training MRQ-VAE (%s, %d levels, K=%d) on %s for steps %d..%d, batch %s",
        cfg.variant, cfg.num_levels, cfg.num_codes, device, start_step + 1, train_cfg.steps, alloc,
    )
    model.train()
    bar = tqdm(total=train_cfg.steps, initial=start_step, disable=not progress, desc="mrqvae", leave=False)
    step = start_step
    try:
        for step in range(start_step + 1, train_cfg.steps + 1):
            outputs = model.forward_batch(_sample_batch(data, alloc, sampler, device))
            loss = mean_loss(outputs)
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                parts = ", ".join(f"{s}: {float(o.loss.detach()):.4g}" for s, o in outputs.items())
                raise TrainingDivergedError(
                    f"step {step}: loss is {loss_value} (per source: {parts}); lower train.lr or check the inputs"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if train_cfg.grad_clip > 0:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip))
                if not math.isfinite(grad_norm):
                    raise TrainingDivergedError(f"step {step}: gradient norm is {grad_norm}; lower train.lr")
            optimizer.step()
            reset: dict[str, int] = {}
            if cfg.dead_code_window and step % cfg.dead_code_window == 0:
                reset = model.reset_dead_codes(optimizer)
            if step % train_cfg.log_every == 0 or step == train_cfg.steps:
                entry = {
                    "step": step,
                    "loss": loss_value,
                    "recon_loss": float(torch.stack([o.recon_loss.detach() for o in outputs.values()]).mean()),
                    "rq_loss": float(torch.stack([o.rq_loss.detach() for o in outputs.values()]).mean()),
                    "uninitialized_codebooks": len(model.uninitialized_codebooks()),
                    "dead_codes_reset": int(sum(reset.values())),
                }
                history.append(entry)
                logger.info("step %d loss %.5f recon %.5f rq %.5f", step, entry["loss"], entry["recon_loss"], entry["rq_loss"])
                bar.set_postfix(loss=f"{loss_value:.4f}")
            bar.update(1)
            if out_dir is not None and train_cfg.checkpoint_every and step % train_cfg.checkpoint_every == 0:
                _save_checkpoint(out_dir, step, model, optimizer, sampler, history)
    finally:
        bar.close()
    final_step = max(step, start_step)
    if out_dir is not None and (not train_cfg.checkpoint_every or final_step % train_cfg.checkpoint_every):
        _save_checkpoint(out_dir, final_step, model, optimizer, sampler, history)

    finish_initialisation(model, data, train_cfg.batch_size, device)
    model.eval()
    metrics = codebook_metrics(model, {s: x.numpy() for s, x in data.items()})
    if out_dir is not None:
        version = save_tokenizer(model, out_dir / "tokenizer", extra={"train_steps": final_step, "seed": train_cfg.seed})
        metrics_path = out_dir / "metrics.json"
        metrics_path.write_text(json.dumps({"tokenizer_version": version, **metrics}, indent=2), encoding="utf-8")
    return TrainResult(model=model, steps=final_step, history=history, metrics=metrics)
