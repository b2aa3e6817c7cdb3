"""Encoders that turn raw multi-source user data into dense vectors.

* :mod:`u2qt_core.encoders.text`: Hugging Face text encoder (FOUNDv2 section 4.1); its settings,
  :class:`~u2qt_core.encoders.text_config.TextEncoderConfig`, import without torch.
* :mod:`u2qt_core.encoders.qformer`: the U2QT-AAAI shared Transformer + causal Q-Former
  encoder and its reverse Q-Former decoder (optional alternative to the text encoder path).

The names below are imported on first use (PEP 562), so that importing one light submodule (the
settings) does not import torch: configuration code, the DAG files and the CLI load without it.
"""
from __future__ import annotations

import importlib

_HOMES = {
    "CausalQFormerEncoder": "qformer", "QFormerEncoderConfig": "qformer", "ReverseQFormerDecoder": "qformer",
    "masked_reconstruction_loss": "qformer",
    "TextEncoder": "text", "get_text_encoder": "text", "last_token_pool": "text", "minilm_model_path": "text",
    "TextEncoderConfig": "text_config",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
