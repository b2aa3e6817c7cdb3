"""Encoders that turn raw multi-source user data into dense vectors.

* :mod:`u2qt_core.encoders.text`: Hugging Face text encoder (FOUNDv2 section 4.1).
* :mod:`u2qt_core.encoders.qformer`: the U2QT-AAAI shared Transformer + causal Q-Former
  encoder and its reverse Q-Former decoder (optional alternative to the text encoder path).
"""

from u2qt_core.encoders.qformer import (
    CausalQFormerEncoder,
    QFormerEncoderConfig,
    ReverseQFormerDecoder,
    masked_reconstruction_loss,
)
from u2qt_core.encoders.text import (
    TextEncoder,
    TextEncoderConfig,
    get_text_encoder,
    last_token_pool,
    minilm_model_path,
)

__all__ = [
    "CausalQFormerEncoder",
    "QFormerEncoderConfig",
    "ReverseQFormerDecoder",
    "masked_reconstruction_loss",
    "TextEncoder",
    "TextEncoderConfig",
    "get_text_encoder",
    "last_token_pool",
    "minilm_model_path",
]
