"""Joint multi-scale alignment pre-training (FOUNDv2 eq. 15) and user embedding export.

``L_total = lambda1 L_token + lambda2 L_win + lambda3 L_sem`` (defaults 0.2 / 0.4 / 0.4).

Inputs are users' token histories (:class:`UserTokenHistories`): the MRQ-VAE codes of each
source-day step. Token vectors are the trained tokenizer's (frozen) codebook vectors
(``MRQVAE.codes_to_vectors``). For the semantic level, each user also comes with the description
of their behaviour *after* the history (time ``t2``), either as text (embedded by a text encoder,
optionally LoRA-tuned) or as precomputed embeddings.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from u2qt_core.alignment.inputs import (
    AlignmentConfig,
    CodebookTokenizer,
    LoraSettings,
    UserTokenHistories,
    _infer_code_dim,
    codebook_token_vectors,
)
from u2qt_core.alignment.losses import semantic_alignment_loss, token_alignment_loss, window_alignment_loss
from u2qt_core.alignment.model import UserSequenceConfig, UserSequenceModel
from u2qt_core.alignment.windows import periodic_window_pairs
from u2qt_core.errors import ConfigError, InputError, TrainingDivergedError

__all__ = [
    "AlignmentConfig",
    "LoraSettings",
    "UserTokenHistories",
    "codebook_token_vectors",
    "AlignmentTrainer",
    "embed_histories",
    "train_alignment",
]

logger = logging.getLogger(__name__)




class DescriptionEncoder(nn.Module):
    """Trainable (LoRA) text encoder for the descriptions: ``texts -> [B, dim]`` with gradients.

    Wraps a fresh :class:`~u2qt_core.encoders.text.TextEncoder` (never the shared cached one, whose
    weights must stay untouched) with ``peft`` LoRA adapters; only the adapters train.
    """

    def __init__(self, text_config: object, lora: LoraSettings) -> None:
        super().__init__()
        from peft import LoraConfig, get_peft_model

        from u2qt_core.encoders.text import TextEncoder

        self.encoder = TextEncoder(text_config)  # type: ignore[arg-type]
        peft_config = LoraConfig(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules
        )
        self.model = get_peft_model(self.encoder.model, peft_config)
        self.dim = self.encoder.dim
        n_train = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        logger.info("LoRA description encoder: %d trainable parameters", n_train)

    def forward(self, texts: Sequence[str]) -> Tensor:
        from u2qt_core.encoders.text import last_token_pool, mean_pool

        enc = self.encoder
        enc._validate(texts)
        instruction = enc.config.instruction if enc.config.pooling == "last_token" else None
        ids, mask = enc._collate(enc._tokenize(texts, instruction)[0])
        ids, mask = ids.to(enc.device), mask.to(enc.device)
        kwargs = {"input_ids": ids, "attention_mask": mask}
        if enc.config.pooling == "last_token" and enc._accepts_position_ids:
            kwargs["position_ids"] = (mask.cumsum(dim=1) - 1).clamp(min=0)
        hidden = self.model(**kwargs).last_hidden_state.float()
        return last_token_pool(hidden, mask) if enc.config.pooling == "last_token" else mean_pool(hidden, mask)


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("alignment device 'cuda' requested but CUDA is not available")
    return torch.device(name)


class AlignmentTrainer:
    """Trains a :class:`UserSequenceModel` with the three alignment losses.

    Args:
        tokenizer: the trained MRQ-VAE (only ``codes_to_vectors`` is used; it is not modified).
        histories: users' token histories up to ``t1``.
        config: :class:`AlignmentConfig`.
        descriptions: per user, text describing their behaviour at ``t2`` (see
            :func:`~u2qt_core.alignment.descriptions.describe_future_behaviour`); needs
            ``text_encoder``.
        text_embeddings: per user, precomputed description embeddings ``[U, text_dim]`` (used
            when ``descriptions`` is None).
        text_encoder: a ``TextEncoder`` (frozen use) or a ``TextEncoderConfig`` (required for
            LoRA, which builds its own copy).

    Without descriptions/embeddings the semantic term is left out (logged).
    """

    def __init__(
        self,
        tokenizer: CodebookTokenizer,
        histories: UserTokenHistories,
        config: AlignmentConfig | None = None,
        *,
        descriptions: Sequence[str] | None = None,
        text_embeddings: Tensor | np.ndarray | None = None,
        text_encoder: object | None = None,
    ) -> None:
        self.config = config = config or AlignmentConfig()
        if len(histories) < 2:
            raise InputError("alignment needs at least two users (contrastive losses)")
        self.device = _resolve_device(config.device)
        torch.manual_seed(config.seed)
        self.rng = np.random.default_rng(config.seed)
        self.tokenizer = tokenizer
        self.histories = histories
        code_dim, levels = _infer_code_dim(tokenizer, histories)
        self.model = UserSequenceModel(
            UserSequenceConfig(
                code_dim=code_dim,
                num_sources=len(histories.sources),
                num_levels=levels,
                **config.sizes(),
            )
        ).to(self.device)

        self.description_encoder: DescriptionEncoder | None = None
        self.descriptions: list[str] | None = None
        self.text_embeddings: Tensor | None = None
        text_dim: int | None = None
        if descriptions is not None:
            if len(descriptions) != len(histories):
                raise InputError(f"{len(descriptions)} descriptions for {len(histories)} users")
            if text_encoder is None:
                raise ConfigError("descriptions need a text_encoder (TextEncoder or TextEncoderConfig)")
            if config.lora.enabled:
                from u2qt_core.encoders.text import TextEncoderConfig

                text_config = text_encoder if isinstance(text_encoder, TextEncoderConfig) else text_encoder.config  # type: ignore[attr-defined]
                self.description_encoder = DescriptionEncoder(text_config, config.lora)
                self.descriptions = list(descriptions)
                text_dim = self.description_encoder.dim
            else:
                from u2qt_core.encoders.text import TextEncoderConfig, get_text_encoder

                encoder = get_text_encoder(text_encoder) if isinstance(text_encoder, TextEncoderConfig) else text_encoder
                text_embeddings = encoder.encode(list(descriptions))  # type: ignore[attr-defined]
        if self.description_encoder is None and text_embeddings is not None:
            emb = torch.as_tensor(np.asarray(text_embeddings), dtype=torch.float32)
            if emb.dim() != 2 or emb.shape[0] != len(histories):
                raise InputError(f"text_embeddings must be [{len(histories)}, dim], got {tuple(emb.shape)}")
            self.text_embeddings = emb
            text_dim = int(emb.shape[1])
        self.text_proj = nn.Linear(text_dim, config.d_model).to(self.device) if text_dim else None
        if self.text_proj is None and config.lambda_semantic > 0:
            logger.info("no future-behaviour descriptions given: semantic-level alignment is off")

        params = list(self.model.parameters())
        if self.text_proj is not None:
            params += list(self.text_proj.parameters())
        if self.description_encoder is not None:
            params += [p for p in self.description_encoder.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        self.step = 0
        self.history: list[dict[str, float]] = []

    # ---------------------------------------------------------------------------- training
    def _batch_losses(self, index: np.ndarray) -> dict[str, Tensor]:
        c = self.config
        batch = self.histories.select(index)
        vectors = codebook_token_vectors(self.tokenizer, batch, self.model.config.code_dim, self.device)
        batch = batch.to(self.device)
        out = self.model(vectors, batch.source_ids, batch.mask)
        losses: dict[str, Tensor] = {
            "token": token_alignment_loss(out.predictions, out.token_vectors, out.token_mask, c.tau_t)
        }
        if c.lambda_window > 0:
            pairs = periodic_window_pairs(
                batch.day_index, batch.mask, period=c.period, window_days=c.window_days, generator=self.rng
            )
            valid = pairs.valid
            if int(valid.sum()) >= 2:
                h_a = self.model(vectors[valid], batch.source_ids[valid], pairs.a[valid]).projected
                h_b = self.model(vectors[valid], batch.source_ids[valid], pairs.b[valid]).projected
                losses["window"] = window_alignment_loss(h_a, h_b, c.tau_w)
        if self.text_proj is not None and c.lambda_semantic > 0:
            if self.description_encoder is not None:
                assert self.descriptions is not None
                text = self.description_encoder([self.descriptions[i] for i in index])
            else:
                assert self.text_embeddings is not None
                text = self.text_embeddings[torch.as_tensor(index)].to(self.device)
            losses["semantic"] = semantic_alignment_loss(out.projected, self.text_proj(text), c.tau_s)
        return losses

    def _total(self, losses: dict[str, Tensor]) -> Tensor:
        c = self.config
        weights = {"token": c.lambda_token, "window": c.lambda_window, "semantic": c.lambda_semantic}
        return sum(weights[name] * value for name, value in losses.items())  # type: ignore[return-value]

    def train_step(self) -> dict[str, float]:
        """One optimisation step on a random batch of users; returns the loss values."""
        self.model.train()
        if self.description_encoder is not None:
            self.description_encoder.train()
        n = len(self.histories)
        index = self.rng.choice(n, size=min(self.config.batch_size, n), replace=False)
        losses = self._batch_losses(index)
        total = self._total(losses)
        self.step += 1
        if not torch.isfinite(total):
            raise TrainingDivergedError(f"alignment loss is not finite at step {self.step}")
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.config.grad_clip:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        self.optimizer.step()
        record = {name: float(v.detach()) for name, v in losses.items()}
        record["total"] = float(total.detach())
        self.history.append(record)
        return record

    def fit(self, steps: int | None = None) -> list[dict[str, float]]:
        """Run ``steps`` (default ``config.steps``) optimisation steps; returns the loss history."""
        steps = self.config.steps if steps is None else steps
        iterator = range(steps)
        if self.config.progress:
            from tqdm.auto import tqdm

            iterator = tqdm(iterator, desc="alignment", unit="step")
        logger.info(
            "alignment: %d users, %d steps, batch %d, device %s, lambdas %.2f/%.2f/%.2f",
            len(self.histories), steps, self.config.batch_size, self.device,
            self.config.lambda_token, self.config.lambda_window, self.config.lambda_semantic,
        )
        for _ in iterator:
            record = self.train_step()
            if self.step % self.config.log_every == 0 or self.step == 1:
                logger.info("alignment step %d: %s", self.step, ", ".join(f"{k}={v:.4f}" for k, v in record.items()))
        return self.history

    @torch.no_grad()
    def evaluate(self, index: Sequence[int] | np.ndarray | None = None) -> dict[str, float]:
        """Loss values (eval mode) on users ``index`` (default: up to ``batch_size`` first users),
        with a fixed window-pair draw, for before/after comparisons."""
        self.model.eval()
        if self.description_encoder is not None:
            self.description_encoder.eval()
        if index is None:
            index = np.arange(min(self.config.batch_size, len(self.histories)))
        saved = self.rng
        self.rng = np.random.default_rng(self.config.seed + 1)
        try:
            losses = self._batch_losses(np.asarray(index))
        finally:
            self.rng = saved
        record = {k: float(v) for k, v in losses.items()}
        record["total"] = float(self._total(losses))
        return record

    # ---------------------------------------------------------------------------- export
    def embed_users(self, histories: UserTokenHistories | None = None, batch_size: int = 256) -> np.ndarray:
        """Fused user embeddings ``float32 [U, fused_dim]`` (default: the training histories)."""
        histories = self.histories if histories is None else histories
        return embed_histories(self.model, self.tokenizer, histories, batch_size, self.device)


@torch.no_grad()
def embed_histories(model: UserSequenceModel, tokenizer: CodebookTokenizer, histories: UserTokenHistories,
                    batch_size: int = 256, device: torch.device | None = None) -> np.ndarray:
    """Fused embeddings ``float32 [U, model.fused_dim]`` of ``histories``, in batches of users (eval mode)."""
    model.eval()
    device = device or torch.device("cpu")
    out = np.empty((len(histories), model.fused_dim), dtype=np.float32)
    for start in range(0, len(histories), batch_size):
        batch = histories.select(np.arange(start, min(start + batch_size, len(histories))))
        vectors = codebook_token_vectors(tokenizer, batch, model.config.code_dim, device)
        batch = batch.to(device)
        out[start : start + len(batch)] = model(vectors, batch.source_ids, batch.mask).fused.float().cpu().numpy()
    return out


def train_alignment(
    tokenizer: CodebookTokenizer,
    histories: UserTokenHistories,
    config: AlignmentConfig | None = None,
    **kwargs: object,
) -> AlignmentTrainer:
    """Build an :class:`AlignmentTrainer`, run ``config.steps`` steps and return it; use its
    ``embed_users(...)`` for downstream fused embeddings. ``kwargs`` go to the trainer
    (``descriptions``, ``text_embeddings``, ``text_encoder``)."""
    trainer = AlignmentTrainer(tokenizer, histories, config, **kwargs)  # type: ignore[arg-type]
    trainer.fit()
    if not trainer.history or not all(math.isfinite(v) for v in trainer.history[-1].values()):
        logger.warning("alignment finished without a finite last loss")
    return trainer
