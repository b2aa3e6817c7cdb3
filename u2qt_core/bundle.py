"""Tokenizer bundles: one immutable folder per tokenizer version.

Codes mean something only together with everything that produced them, so a bundle holds, next
to the MRQ-VAE (:mod:`u2qt_core.checkpoint` files), its *contract*::

    {"encoder": {"model": folder name, "sha256": hash of its config and weight files,
                 "pooling", "max_length", "normalize"},
     "inputs":  {...},    # source list and order, instructions, document format, tabular transforms
     "numeric_path": {"device", "precision", "runtime"}}   # what training embedded with

The tokenizer version hashes the MRQ-VAE config, its tensors and this contract: changing the
encoder, its pooling or max_length, a source's instruction, the document format or a tabular
transform gives another version even with the same MRQ-VAE weights.

Layout: ``<model_dir>/bundles/<version>/`` (``model.safetensors``, ``config.json`` with the
contract, for a U²QT-AAAI tokenizer ``frontend.safetensors`` with its front end and decoder, whose
config and tensor hash the contract's ``architecture`` records, ``training_summary.json``, ``code_stats.json``: the training code histograms per source
and level, :mod:`u2qt_core.code_stats`, what a night's drift is measured against).  The files
beside the model are written into the temporary folder before its one rename, so they are as
immutable as the weights; the version hashes what decides the codes (config, tensors, contract),
not these descriptions of the training sample. :func:`write_bundle` writes a temporary folder and renames
it once, so a reader sees a whole bundle or none, and an existing version is never rewritten.
:func:`check_contract` compares a night's contract with the bundle's and raises one line naming
the first field that differs and both values. The numeric path (:mod:`u2qt_core.numeric_path`)
is left out of that comparison: the pipeline compares it on its own, since a path that
``u2qt evaluate`` validated may differ (:mod:`pipelines.night.numeric_path`). Bundles written
before the path was recorded carry the dtype policy (``encoder.dtype``, ``encoder.int8_dynamic``)
instead; those two fields are left out of the comparison too.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any

from u2qt_core.checkpoint import load_tokenizer, save_tokenizer
from u2qt_core.code_stats import STATS_FILE
from u2qt_core.encoders.text import TextEncoderConfig, minilm_model_path
from u2qt_core.errors import CheckpointError, U2QTError
from u2qt_core.mrqvae import MRQVAE

__all__ = ["BUNDLES_FOLDER", "ContractMismatch", "encoder_identity", "write_bundle", "load_bundle",
           "read_contract", "read_code_stats", "check_contract", "bundle_path", "NUMERIC_FIELDS",
           "architecture_of"]

log = logging.getLogger(__name__)

BUNDLES_FOLDER = "bundles"
SUMMARY_FILE = "training_summary.json"
_HASHED_SUFFIXES = (".json", ".safetensors", ".bin", ".txt", ".model")   # config, weights, vocab
#: contract fields compared by the numeric-path check, not by :func:`check_contract` (the last
#: two: the dtype policy older bundles recorded in their encoder identity)
NUMERIC_FIELDS = ("numeric_path", "encoder.dtype", "encoder.int8_dynamic")
#: contract fields describing the bundle's own model (a U²QT front end), not a night's settings
MODEL_FIELDS = ("architecture",)


class ContractMismatch(U2QTError):
    """The night's settings differ from the ones the tokenizer bundle was trained with."""


@lru_cache(maxsize=8)
def _folder_sha256(folder: str, stamp: tuple) -> str:
    digest = hashlib.sha256()
    root = Path(folder)
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in _HASHED_SUFFIXES):
        digest.update(f"\n{path.relative_to(root)}\n".encode())
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def encoder_identity(config: TextEncoderConfig) -> dict[str, Any]:
    """What of the text encoder decides its vectors: the model folder's name and a hash of its
    config and weight files, pooling, max_length and normalization (not the batch sizes, which
    leave a text's vector unchanged, nor the device and dtype: the numeric path they resolve to
    is recorded beside, under ``numeric_path``)."""
    folder = Path(config.model_path).expanduser() if config.model_path else minilm_model_path()
    if not folder.is_dir():
        raise CheckpointError(f"encoder.model_path {folder} is not a folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in _HASHED_SUFFIXES)
    stamp = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return {
        "model": folder.resolve().name, "sha256": _folder_sha256(str(folder.resolve()), stamp),
        "pooling": config.pooling, "max_length": config.max_length, "normalize": config.normalize,
    }


def bundle_path(model_dir: str | Path, version: str) -> Path:
    """Folder of ``version``'s bundle under ``model_dir``."""
    return Path(model_dir).expanduser().absolute() / BUNDLES_FOLDER / version


def write_bundle(model: MRQVAE, model_dir: str | Path, contract: dict[str, Any], *,
                 extra: dict[str, Any] | None = None, summary: dict[str, Any] | None = None,
                 code_stats: dict[str, Any] | None = None) -> tuple[str, Path]:
    """Save ``model`` with ``contract`` as a new bundle; returns ``(version, folder)``.
    ``code_stats`` (:func:`u2qt_core.code_stats.training_code_stats`) goes to ``code_stats.json``.

    The files go to a temporary folder renamed once to ``bundles/<version>``; when that version
    exists already (same content), it is kept as it is and the new copy dropped."""
    root = Path(model_dir).expanduser().absolute() / BUNDLES_FOLDER
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{uuid.uuid4().hex}"
    try:
        quantizer = getattr(model, "mrqvae", model)     # a U2QTTokenizer keeps its MRQ-VAE there
        if quantizer is not model:                      # its front end goes into the contract, hence the version
            contract = {**contract, "architecture": model.architecture_contract()}
        version = save_tokenizer(quantizer, tmp, extra=extra, contract=contract)
        if quantizer is not model:
            model.save_frontend(tmp)
        if summary is not None:
            (tmp / SUMMARY_FILE).write_text(json.dumps({**summary, "tokenizer_version": version}, indent=2,
                                                       default=float) + "\n")
        if code_stats is not None:
            (tmp / STATS_FILE).write_text(json.dumps({**code_stats, "tokenizer_version": version}, sort_keys=True) + "\n")
        final = root / version
        if final.exists():
            log.info("bundle %s exists already at %s: kept", version, final)
        else:
            try:
                os.rename(tmp, final)   # atomic on one filesystem
            except OSError as exc:      # another writer won the race (fine) or the rename failed
                if not final.exists():
                    raise CheckpointError(f"{final}: could not write the tokenizer bundle: {exc}") from exc
            log.info("wrote bundle %s to %s", version, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return version, root / version


def read_code_stats(folder: str | Path) -> dict[str, Any] | None:
    """The training code statistics of a bundle (``code_stats.json``), or None for a bundle
    written before they were kept (its nights then report no drift, only utilization and fidelity)."""
    path = Path(folder) / STATS_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable code statistics: {exc}") from exc


def read_contract(folder: str | Path) -> dict[str, Any]:
    """The contract stored in a bundle's ``config.json`` (without loading the weights)."""
    path = Path(folder) / "config.json"
    try:
        contract = json.loads(path.read_text(encoding="utf-8")).get("contract")
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable tokenizer config: {exc}") from exc
    if not isinstance(contract, dict):
        raise CheckpointError(f"{path}: no contract: not a tokenizer bundle (train it again with `u2qt train`)")
    return contract


def load_bundle(folder: str | Path, map_location: str = "cpu") -> tuple[MRQVAE, str, dict[str, Any]]:
    """``(model, version, contract)`` of a bundle; the version is checked against the content.
    ``model`` is an :class:`MRQVAE` (FOUNDv2) or a :class:`~u2qt_core.u2qt_model.U2QTTokenizer`
    (contract ``architecture.name: u2qt_aaai``), whose ``config`` is its MRQ-VAE's."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"tokenizer bundle {folder} does not exist")
    model, version = load_tokenizer(folder, map_location=map_location)
    if folder.name != version:
        raise CheckpointError(f"bundle folder {folder} holds tokenizer {version}: the folder was renamed or mixed")
    contract = read_contract(folder)
    if architecture_of(contract) == "u2qt_aaai":
        from u2qt_core.u2qt_model import U2QTTokenizer

        model = U2QTTokenizer.from_bundle(folder, model, contract["architecture"], map_location)
    return model, version, contract


def architecture_of(contract: dict[str, Any]) -> str:
    """The tokenizer architecture a bundle's contract records (``foundv2`` when it names none)."""
    return str((contract.get("architecture") or {}).get("name", "foundv2"))


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key in value:
            out.update(_flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
        return out or {prefix: {}}
    return {prefix: value}


def check_contract(bundle: dict[str, Any], night: dict[str, Any], version: str) -> None:
    """Raise :class:`ContractMismatch` naming the first field where ``night`` differs from the
    contract tokenizer ``version`` was trained with (lists compare whole: order matters). The
    :data:`NUMERIC_FIELDS` are left to the numeric-path check."""
    theirs, ours = _flatten(bundle), _flatten(night)
    for field in sorted(set(theirs) | set(ours)):
        if any(field == f or field.startswith(f + ".") for f in (*NUMERIC_FIELDS, *MODEL_FIELDS)):
            continue
        if theirs.get(field, "<absent>") != ours.get(field, "<absent>"):
            raise ContractMismatch(
                f"tokenizer {version} was trained with {field} = {theirs.get(field, '<absent>')!r} but this "
                f"run's settings have {ours.get(field, '<absent>')!r}: its codes would change meaning; restore "
                "the setting, or train, evaluate and promote a tokenizer for the new one (then `u2qt retokenize`)")
