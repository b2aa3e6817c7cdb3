"""Periodic window pairs for the window-level alignment (FOUNDv2 eq. 12).

A user's trajectory is cut into consecutive windows of ``window_days`` days (aligned blocks,
``day // window_days``). Two windows are *periodic partners* when they are a whole number of
periods apart (e.g. the same weekday in two different weeks for ``period=7, window_days=1``, or two
different weeks for ``window_days=7``). For each user one such pair ``(W_a, W_b)`` is drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from u2qt_core.errors import InputError

__all__ = ["WindowPairs", "periodic_window_pairs"]


@dataclass
class WindowPairs:
    """Step selections of the drawn windows.

    Attributes:
        a: ``Bool[B, S]`` steps of window ``W_a``.
        b: ``Bool[B, S]`` steps of its periodic partner ``W_b``.
        valid: ``Bool[B]``: the user has at least two periodic windows (others have empty a/b
            and must be left out of the loss).
    """

    a: Tensor
    b: Tensor
    valid: Tensor


def periodic_window_pairs(
    day_index: Tensor,
    mask: Tensor | None = None,
    *,
    period: int = 7,
    window_days: int = 1,
    generator: np.random.Generator | None = None,
) -> WindowPairs:
    """Draw one periodic window pair per user.

    Args:
        day_index: ``Long[B, S]`` day number of each step (any origin).
        mask: ``Bool[B, S]`` real steps (None: all real).
        period: days between periodic partners (7: weekly rhythm; 30: monthly).
        window_days: window length in days; must divide ``period``.
        generator: numpy generator for reproducible draws (None: a fresh unseeded one).

    Returns:
        :class:`WindowPairs`. Among the user's window phases (``block mod period/window_days``)
        that occur in at least two blocks, one phase is drawn uniformly, then two distinct blocks
        of it; which is ``a`` and which ``b`` is random.
    """
    if period <= 0 or window_days <= 0 or period % window_days:
        raise InputError(f"window_days ({window_days}) must be > 0 and divide period ({period})")
    if day_index.dim() != 2:
        raise InputError(f"day_index must be [B, S], got {tuple(day_index.shape)}")
    if mask is None:
        mask = torch.ones_like(day_index, dtype=torch.bool)
    if mask.shape != day_index.shape:
        raise InputError(f"mask {tuple(mask.shape)} and day_index {tuple(day_index.shape)} differ")
    rng = generator if generator is not None else np.random.default_rng()
    blocks_per_period = period // window_days
    days = day_index.detach().cpu().numpy()
    real = mask.detach().cpu().numpy().astype(bool)
    block = np.floor_divide(days, window_days)
    a = np.zeros_like(real)
    b = np.zeros_like(real)
    valid = np.zeros(real.shape[0], dtype=bool)
    for i in range(real.shape[0]):
        present = np.unique(block[i][real[i]])
        if present.size < 2:
            continue
        phases: dict[int, list[int]] = {}
        for blk in present.tolist():
            phases.setdefault(blk % blocks_per_period, []).append(blk)
        candidates = [blks for blks in phases.values() if len(blks) >= 2]
        if not candidates:
            continue
        blks = candidates[int(rng.integers(len(candidates)))]
        first, second = rng.choice(len(blks), size=2, replace=False)
        a[i] = real[i] & (block[i] == blks[first])
        b[i] = real[i] & (block[i] == blks[second])
        valid[i] = True
    device = day_index.device
    return WindowPairs(
        a=torch.from_numpy(a).to(device),
        b=torch.from_numpy(b).to(device),
        valid=torch.from_numpy(valid).to(device),
    )
