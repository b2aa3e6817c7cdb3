"""Pooling and prompts of the text encoder, free of any model: masked mean and last-token
pooling over hidden states, the Qwen3-Embedding instruction prompt, and the padded length bucket
that keeps a text's vector independent of its batch-mates."""
from __future__ import annotations

import torch

__all__ = ["last_token_pool", "mean_pool", "format_instruction", "length_bucket"]


def last_token_pool(last_hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Hidden state of each sequence's last real token (Qwen3-Embedding's ``last_token_pool``).

    Args:
        last_hidden_states: ``[B, T, H]``.
        attention_mask: ``[B, T]`` (1 = token, 0 = pad), left- or right-padded.

    Returns:
        ``[B, H]``. Under left padding this is position ``-1``; otherwise each row is indexed
        by its mask length.
    """
    left_padding = bool((attention_mask[:, -1] == 1).all())
    if left_padding:
        return last_hidden_states[:, -1]
    lengths = attention_mask.sum(dim=1) - 1
    rows = torch.arange(last_hidden_states.shape[0], device=last_hidden_states.device)
    return last_hidden_states[rows, lengths]


def mean_pool(last_hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Attention-masked mean over tokens: ``[B, T, H]``, ``[B, T]`` -> ``[B, H]``."""
    mask = attention_mask.unsqueeze(-1).to(last_hidden_states.dtype)
    summed = (last_hidden_states * mask).sum(dim=1)
    return summed / mask.sum(dim=1).clamp(min=1e-9)


def format_instruction(instruction: str | None, text: str) -> str:
    """Qwen3-Embedding query prompt; the bare text when there is no instruction."""
    if not instruction:
        return text
    return f"Instruct: {instruction}\nQuery:{text}"


def length_bucket(n_tokens: int, multiple: int) -> int:
    """Padded length of a text of ``n_tokens`` tokens: ``n_tokens`` rounded up to ``multiple``."""
    return -(-n_tokens // multiple) * multiple
