"""Fixtures for the pure-torch tests of ``u2qt_core``."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _single_torch_thread() -> Iterator[None]:
    """Tiny tensors on a shared 2-core machine: one intra-op thread is 5-10x faster than two
    (idle threads busy-wait), so every core test module runs with one and restores the setting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
