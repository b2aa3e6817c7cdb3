"""A physical-limit anchor for the encoder: how close its forward passes come to this machine's
fp32 matrix-multiply rate, measured in the same run (``make bench-inference``).

``matmul_rate``: fp32 GEMMs of the encoder's own shapes (``[rows x width, d] @ [d, d_ff]``, the
feed-forward product that dominates a BERT layer) on the threads the bench runs with, FLOP per
CPU-second. ``encoder_flops``: the FLOPs of the forward passes a bare ``encode`` ran (its batch
plan: rows x padded width per pass) for a BERT-style encoder: per token and layer ``8 d^2`` (Q, K,
V and output projections) ``+ 4 d d_ff`` (feed-forward), plus attention ``4 w d`` per token for a
pass of width ``w``. The ratio of the two rates is the share of the machine's matmul peak the
encoder reaches: near 1, nothing around the encoder can make it faster on this CPU.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import torch


def encoder_flops(model_config: Any, plan: Sequence[tuple[Sequence[int], int]]) -> float:
    """FLOPs of the forward passes ``plan`` (``[(rows, padded width)]``) of a BERT-style encoder
    whose Hugging Face config is ``model_config`` (hidden_size, intermediate_size, num_hidden_layers)."""
    d, ff, layers = model_config.hidden_size, model_config.intermediate_size, model_config.num_hidden_layers
    total = 0.0
    for rows, width in plan:
        tokens = len(rows) * width
        total += layers * tokens * (8 * d * d + 4 * d * ff + 4 * width * d)
    return total


def matmul_rate(model_config: Any, width: int = 64, rows: int = 64, min_cpu_s: float = 2.0) -> dict[str, float]:
    """fp32 FLOP per CPU-second of ``[rows*width, d] @ [d, d_ff]`` GEMMs (the encoder's largest
    product), repeated for at least ``min_cpu_s`` CPU-seconds after a warm-up."""
    d, ff = model_config.hidden_size, model_config.intermediate_size
    a, b = torch.randn(rows * width, d), torch.randn(d, ff)
    flops_each = 2.0 * rows * width * d * ff
    for _ in range(3):
        torch.mm(a, b)
    done, started = 0, time.process_time()
    while time.process_time() - started < min_cpu_s:
        torch.mm(a, b)
        done += 1
    cpu = time.process_time() - started
    return {"gemm_shape": [rows * width, d, ff], "gflop_per_cpu_s": done * flops_each / cpu / 1e9,
            "threads": torch.get_num_threads()}


def anchor(encoder, plan, encoder_cpu_s: float) -> dict[str, float]:
    """The encoder's FLOP rate over a bare ``encode`` (``plan``, ``encoder_cpu_s``) beside the
    machine's matmul rate, and their ratio (``fraction_of_matmul_peak``)."""
    config = encoder.model.config
    peak = matmul_rate(config)
    rate = encoder_flops(config, plan) / encoder_cpu_s / 1e9
    return {"encoder_gflop_per_cpu_s": rate, "matmul": peak,
            "fraction_of_matmul_peak": rate / peak["gflop_per_cpu_s"]}
