"""Multi-scale alignment pre-training of the user tokens (FOUNDv2 section 4.3, eqs. 10-15).

* :mod:`.losses`: token (eqs. 10-11), window (eq. 12) and semantic (eq. 14) losses;
* :mod:`.model`: :class:`UserSequenceModel`, causal Transformer over a user's token sequence;
* :mod:`.windows`: periodic window pairs for the window level;
* :mod:`.descriptions`: the template function F of eq. 13;
* :mod:`.inputs`: the alignment config, users' token histories, frozen codebook vectors;
* :mod:`.trainer`: joint training (eq. 15) and fused user embeddings.
"""

from u2qt_core.alignment.descriptions import PAPER_TEMPLATE, describe, describe_future_behaviour
from u2qt_core.alignment.losses import (
    info_nce,
    semantic_alignment_loss,
    token_alignment_loss,
    token_position_weights,
    window_alignment_loss,
)
from u2qt_core.alignment.model import UserSequenceConfig, UserSequenceModel, UserSequenceOutput
from u2qt_core.alignment.trainer import (
    AlignmentConfig,
    AlignmentTrainer,
    LoraSettings,
    UserTokenHistories,
    codebook_token_vectors,
    embed_histories,
    train_alignment,
)
from u2qt_core.alignment.windows import WindowPairs, periodic_window_pairs

__all__ = [
    "PAPER_TEMPLATE",
    "describe",
    "describe_future_behaviour",
    "info_nce",
    "semantic_alignment_loss",
    "token_alignment_loss",
    "token_position_weights",
    "window_alignment_loss",
    "UserSequenceConfig",
    "UserSequenceModel",
    "UserSequenceOutput",
    "AlignmentConfig",
    "AlignmentTrainer",
    "LoraSettings",
    "UserTokenHistories",
    "codebook_token_vectors",
    "embed_histories",
    "train_alignment",
    "WindowPairs",
    "periodic_window_pairs",
]
