"""Sequence-encoder inference cost: how the fused embedding's price grows with users and history.

    python -m benchmarks.bench_sequence --out bench_results [--config conf/bench.yaml] [--quick]

Writes ``<out>/bench_sequence.json``. The features job runs :meth:`SequenceEmbedder.embed` on each
partition's users; this measures exactly that call (histories built from rows, codebook lookup,
the Transformer, per-source pooling) on random codes of the configured tokenizer preset and
sequence model (``conf/sequence.yaml``), untrained weights (cost does not depend on them):

* ``users``: CPU-seconds at a fixed ``steps`` per user for several user counts (expected linear);
* ``steps``: CPU-seconds per 1,000 users at several source-days per user (attention is quadratic
  in ``steps x levels`` tokens, the rest linear; ``sequence_encoder.max_steps`` caps it).

CPU-seconds (process time, all threads) are reported beside wall time: the machine is shared.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.common import load_average, machine_facts, repo_path, simple_main, write_result

log = logging.getLogger("benchmarks.sequence")


def _rows(n_users: int, steps: int, sources: int, levels: int, table_size: int, seed: int) -> pd.DataFrame:
    """``steps`` (source, day) rows per user: day ``k // sources``, source ``k % sources``, random codes."""
    rng = np.random.default_rng(seed)
    k = np.tile(np.arange(steps), n_users)
    return pd.DataFrame({"user_id": np.repeat(np.arange(n_users, dtype=np.int64), steps), "day": k // sources,
                         "source_index": k % sources,
                         "codes": list(rng.integers(0, table_size, (n_users * steps, levels)))})


def _embedder(params: dict[str, Any]):
    """``(SequenceEmbedder, CodebookTables)`` of the preset and sequence config, random weights."""
    import torch

    from pipelines.config.config_loading import load_model
    from pipelines.features.sequence_encoder import SequenceEmbedder
    from pipelines.config.settings import load_sources
    from u2qt_core.alignment import AlignmentConfig, UserSequenceConfig, UserSequenceModel
    from u2qt_core.alignment.codebooks import CodebookTables
    from u2qt_core.config import load_model_preset
    from u2qt_core.mrqvae import MRQVAE

    torch.manual_seed(0)
    preset = load_model_preset(repo_path(params["preset"]), layout=load_sources().layout(384))
    books = CodebookTables(MRQVAE(preset.mrqvae))
    sequence = load_model(AlignmentConfig, repo_path(params["sequence_model"]))
    config = UserSequenceConfig(code_dim=books.code_dim, num_sources=len(books.sources), num_levels=books.levels,
                                **{**sequence.sizes(), "max_tokens": max(params["steps"]) * books.levels})
    model = UserSequenceModel(config)
    meta = {"model": config.model_dump(), "sources": books.sources, "scale": 1.0, "max_steps": max(params["steps"])}
    return SequenceEmbedder(model.state_dict(), meta), books


def _measure(embedder, books, n_users: int, steps: int, repeats: int, seed: int) -> dict[str, Any]:
    rows = _rows(n_users, steps, len(books.sources), books.levels, books.table_size, seed)
    embedder.embed(rows.head(steps * 8), books)       # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        users, fused = embedder.embed(rows, books)
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    assert len(users) == n_users and np.isfinite(fused).all()
    return {"users": n_users, "steps": steps, "tokens_per_user": steps * books.levels,
            "wall_s_median": float(np.median(wall)), "cpu_s_median": float(np.median(cpu)),
            "cpu_s_per_1000_users": float(np.median(cpu)) * 1000 / n_users, "repeats_cpu_s": cpu}


def run(config: dict, out_dir: str) -> dict[str, Any]:
    import torch

    params = config["sequence"]
    torch.set_num_threads(params["threads"])
    embedder, books = _embedder(params)
    load_before = load_average()
    by_users = [_measure(embedder, books, n, params["users_steps"], params["repeats"], params["seed"])
                for n in params["users"]]
    by_steps = [_measure(embedder, books, params["steps_users"], s, params["repeats"], params["seed"])
                for s in params["steps"]]
    for r in by_users + by_steps:
        log.info("%d users x %d steps: %.3f CPU-s (%.3f per 1,000 users)", r["users"], r["steps"],
                 r["cpu_s_median"], r["cpu_s_per_1000_users"])
    payload = {"benchmark": "bench_sequence", "machine": machine_facts(), "parameters": params,
               "load_average_before": load_before, "load_average_after": load_average(),
               "fused_dim": embedder.fused_dim, "by_users": by_users, "by_steps": by_steps}
    write_result(out_dir, "bench_sequence", payload)
    return payload


def main(argv: list[str] | None = None) -> int:
    return simple_main(__doc__, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
