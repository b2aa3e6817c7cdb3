"""Save / load a trained tokenizer without pickle, with a content-derived version string.

A tokenizer directory holds:

* ``model.safetensors``: every tensor of ``MRQVAE.state_dict()`` (weights, codebooks and the
  per-segment ``initialized`` flags);
* ``config.json``: ``{"format": "u2qt-tokenizer", "format_version": 1, "tokenizer_version": ...,
  "mrqvae": <MRQVAEConfig>, "extra": {...}}``.

``tokenizer_version`` = ``"u2qt-"`` + the first 12 hex digits of a sha256 over the canonical
config JSON followed by, for each tensor in sorted name order, its name, dtype, shape and raw bytes,
and then (when the tokenizer is saved with one) the canonical JSON of its ``contract``: the encoder
identity and input contract of :mod:`u2qt_core.bundle`, without which the same weights produce
other codes. It identifies the token vocabulary: two tokenizers with the same version produce the
same codes from the same raw rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from u2qt_core.config import MRQVAEConfig
from u2qt_core.config_loader import format_validation_error
from u2qt_core.errors import CheckpointError
from u2qt_core.mrqvae import MRQVAE

__all__ = [
    "save_tokenizer",
    "load_tokenizer",
    "tokenizer_version",
    "canonical_config_json",
    "MODEL_FILE",
    "CONFIG_FILE",
    "FORMAT_VERSION",
]

logger = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT_NAME = "u2qt-tokenizer"
FORMAT_VERSION = 1


def canonical_config_json(config: MRQVAEConfig) -> str:
    """Config as compact JSON with sorted keys (the hashed form). ``tabular_standardize: false`` is
    left out: it is how tokenizers saved before the key behave, so their versions stay what they were."""
    payload = config.model_dump(mode="json")
    if not payload.get("tabular_standardize", True):
        del payload["tabular_standardize"]
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""


def _version_of(config: MRQVAEConfig, state: dict[str, torch.Tensor], contract: dict[str, Any] | None = None) -> str:
    digest = hashlib.sha256()
    digest.update(canonical_config_json(config).encode("utf-8"))
    for name in sorted(state):
        tensor = state[name]
        digest.update(f"\n{name}|{str(tensor.dtype).removeprefix('torch.')}|{list(tensor.shape)}\n".encode())
        digest.update(_tensor_bytes(tensor))
    if contract:
        digest.update(b"\ncontract|" + json.dumps(contract, sort_keys=True, separators=(",", ":")).encode("utf-8"))
    return "u2qt-" + digest.hexdigest()[:12]


def tokenizer_version(model: MRQVAE, contract: dict[str, Any] | None = None) -> str:
    """Deterministic content hash of a tokenizer (config + all saved tensors + its contract)."""
    return _version_of(model.config, model.state_dict(), contract)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def save_tokenizer(model: MRQVAE, directory: Path, *, extra: dict[str, Any] | None = None,
                   contract: dict[str, Any] | None = None) -> str:
    """Write ``model.safetensors`` + ``config.json`` into ``directory``; return the tokenizer version.

    ``extra`` must be JSON-serialisable (e.g. training metrics, data snapshot ids); ``contract``
    (JSON, hashed into the version) is what else the codes depend on (:mod:`u2qt_core.bundle`).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    version = _version_of(model.config, state, contract)
    payload = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "tokenizer_version": version,
        "mrqvae": model.config.model_dump(mode="json"),
        "extra": extra or {},
    }
    if contract:
        payload["contract"] = contract
    try:
        config_text = json.dumps(payload, indent=2, sort_keys=True)
    except TypeError as exc:
        raise CheckpointError(f"{directory / CONFIG_FILE}: extra is not JSON-serialisable: {exc}") from exc
    weights_tmp = directory / (MODEL_FILE + ".tmp")
    save_file(state, str(weights_tmp), metadata={"tokenizer_version": version, "format": FORMAT_NAME})
    os.replace(weights_tmp, directory / MODEL_FILE)
    _atomic_write_text(directory / CONFIG_FILE, config_text + "\n")
    logger.info("saved tokenizer %s to %s", version, directory)
    return version


def read_tokenizer_config(directory: Path) -> tuple[MRQVAEConfig, dict[str, Any]]:
    """Parse and validate ``config.json`` of a tokenizer directory -> (config, whole payload)."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: missing tokenizer config file")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable tokenizer config: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: not a u2qt tokenizer config (format != {FORMAT_NAME!r})")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {payload.get('format_version')!r} is not supported (expected {FORMAT_VERSION})"
        )
    mrqvae = payload.get("mrqvae")
    if isinstance(mrqvae, dict) and "tabular_standardize" not in mrqvae:
        mrqvae = {**mrqvae, "tabular_standardize": False}     # saved before the key: raw tabular features
    try:
        config = MRQVAEConfig.model_validate(mrqvae)
    except ValidationError as exc:
        raise CheckpointError(format_validation_error(exc, f"{path}: mrqvae")) from exc
    return config, payload


def load_tokenizer(directory: Path, map_location: str = "cpu") -> tuple[MRQVAE, str]:
    """Load a tokenizer saved by :func:`save_tokenizer` -> (model in eval mode, version).

    Raises :class:`CheckpointError` naming the file, tensor or key on any mismatch, and when the
    version recomputed from the loaded content differs from the stored one.
    """
    directory = Path(directory)
    config, payload = read_tokenizer_config(directory)
    weights_path = directory / MODEL_FILE
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path}: missing tokenizer weights file")
    try:
        state = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights_path}: unreadable safetensors file: {exc}") from exc

    model = MRQVAE(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        raise CheckpointError(f"{weights_path}: tensor {missing[0]!r} required by the config is missing"
                              + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    if unexpected:
        raise CheckpointError(f"{weights_path}: tensor {unexpected[0]!r} is not part of the configured model"
                              + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""))
    for name, tensor in expected.items():
        got = state[name]
        if got.shape != tensor.shape or got.dtype != tensor.dtype:
            raise CheckpointError(
                f"{weights_path}: tensor {name!r} has shape {list(got.shape)} dtype {got.dtype}, "
                f"config expects shape {list(tensor.shape)} dtype {tensor.dtype}"
            )
    model.load_state_dict(state, strict=True)

    stored = payload.get("tokenizer_version")
    version = _version_of(config, state, payload.get("contract"))
    if stored != version:
        raise CheckpointError(
            f"{directory / CONFIG_FILE}: stored tokenizer_version {stored!r} does not match the content "
            f"(recomputed {version!r}); the files were modified or mixed"
        )
    model.to(map_location)
    model.eval()
    return model, version
