"""The text encoder's other numeric paths against fp32, on one date's documents (a section of
``make bench-inference``, :mod:`benchmarks.bench_inference`):

* ``int8``: ``int8_dynamic`` (torch.ao dynamic quantization of the Linear layers): docs per
  CPU-second against fp32 (interleaved), the share of codes that change, and a linear probe (the
  eval protocol of :mod:`u2qt_core.evaluation.probes`) on per-user mean embeddings and bag-of-codes;
* ``bf16_autocast``: fp32 weights under bf16 autocast, what ``dtype: auto`` runs on a GPU executor
  (here on the CPU, its stand-in): the share of documents whose full code tuple, and each level's
  code, equals fp32's, with :func:`pipelines.tokenizer.path_agreement.agreement` (the figure
  ``u2qt evaluate`` records on a version and a night on another path is checked against). Its
  speed on a CPU says nothing about a GPU and is not reported.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import time_interleaved
from pipelines.lake.lake import Lake


def tuple_codes(model, vectors: np.ndarray, sources: np.ndarray) -> np.ndarray:
    """The code tuples of ``vectors`` (float32 [N, dim]) quantized per source: int64 [N, L]."""
    import torch

    codes = np.zeros((len(vectors), model.config.num_levels), dtype=np.int64)
    with torch.no_grad():
        for source in np.unique(sources):
            rows = np.flatnonzero(sources == source)
            codes[rows] = model.quantize(torch.from_numpy(vectors[rows]), str(source)).numpy()
    return codes


def bench_numeric_paths(spark, settings, info, docs, params: dict[str, Any]) -> dict[str, Any]:
    """``{"int8": ..., "bf16_autocast": ...}`` on ``docs`` (the date's user_id, source, document)."""
    from u2qt_core.checkpoint import load_tokenizer

    model, _ = load_tokenizer(Path(info.model_dir))
    model.eval()
    int8, fp32_codes = bench_int8(spark, settings, model, docs, params)
    return {"int8": int8, "bf16_autocast": bench_bf16_agreement(settings, model, docs, fp32_codes)}


def bench_bf16_agreement(settings, model, docs, fp32_codes: np.ndarray) -> dict[str, Any]:
    """bf16 autocast's codes against fp32's (``fp32_codes`` int64 [N, L], same rows as ``docs``)."""
    from pipelines.tokenizer.path_agreement import agreement
    from u2qt_core.encoders.text import TextEncoder

    texts, sources = docs["document"].tolist(), docs["source"].to_numpy(object)
    encoder = TextEncoder(settings.encoder.model_copy(update={"dtype": "bfloat16-autocast"}))
    codes = tuple_codes(model, encoder.encode(texts), sources)
    users = docs["user_id"].to_numpy()

    def keyed(all_codes: np.ndarray):
        return {str(s): ([(int(u), "") for u in users[sources == s]], all_codes[sources == s]) for s in np.unique(sources)}

    measured = agreement(keyed(fp32_codes), keyed(codes))
    return {"path": str(encoder.numeric_path), "reference": "fp32 on this CPU", **measured}


def bench_int8(spark, settings, model, docs, params: dict[str, Any]) -> tuple[dict[str, Any], np.ndarray]:
    """int8 dynamic quantization of the encoder against fp32: speed, changed codes, probe AUC;
    also returns fp32's codes (int64 [N, L])."""
    from u2qt_core.encoders.text import TextEncoder
    from u2qt_core.evaluation.probes import probe_tasks, split_users
    from u2qt_core.evaluation.representations import bag_of_codes, mean_embeddings

    texts, sources = docs["document"].tolist(), docs["source"].to_numpy(object)
    encoders = {"fp32": TextEncoder(settings.encoder),
                "int8": TextEncoder(settings.encoder.model_copy(update={"int8_dynamic": True}))}
    cpu: dict[str, list[float]] = {k: [] for k in encoders}
    vectors: dict[str, np.ndarray] = {}

    def metered(name):
        def call():
            start = time.process_time()
            vectors[name] = encoders[name].encode(texts)
            cpu[name].append(time.process_time() - start)
        return call

    time_interleaved({k: metered(k) for k in encoders}, repeats=int(params.get("repeats", 2)), warmup=0)
    codes = {k: tuple_codes(model, vectors[k], sources) for k in encoders}
    out: dict[str, Any] = {
        "docs_per_cpu_s": {k: len(texts) / min(v) for k, v in cpu.items()},
        "changed_codes_share": float((codes["fp32"] != codes["int8"]).mean()),
        "changed_rows_share": float((codes["fp32"] != codes["int8"]).any(axis=1).mean()),
        "cosine_to_fp32_mean": float((vectors["fp32"] * vectors["int8"]).sum(axis=1).mean()),
    }
    out["int8_over_fp32"] = out["docs_per_cpu_s"]["int8"] / out["docs_per_cpu_s"]["fp32"]
    labels = Lake(spark, settings).read("user_labels").toPandas()
    user_ids = np.array(sorted(docs["user_id"].unique()))
    index = {u: i for i, u in enumerate(user_ids)}
    labels = labels[labels["user_id"].isin(index)]
    text_sources = sorted(set(sources))
    rows_user = {s: np.array([index[u] for u in docs["user_id"][sources == s]]) for s in text_sources}
    y: dict[str, np.ndarray] = {}
    for task, group in labels.groupby("task"):
        vec = np.zeros(len(user_ids), dtype=int)
        vec[[index[u] for u in group["user_id"]]] = group["label"].astype(int).to_numpy()
        if 5 <= vec.sum() <= len(vec) - 5:
            y[str(task)] = vec
    splits = {t: split_users(v, 0.3, 0) for t, v in y.items()}
    probes: dict[str, Any] = {}
    for k in encoders if y else []:  # a tiny world may have no task with 5 users of each class
        emb = mean_embeddings(rows_user, {s: vectors[k][sources == s] for s in text_sources},
                              n_users=len(user_ids), sources=text_sources, dims={s: vectors[k].shape[1] for s in text_sources})
        boc = bag_of_codes(rows_user, {s: codes[k][sources == s] for s in text_sources}, n_users=len(user_ids),
                           sources=text_sources, num_codes=max(model.codebook_sizes().values()))
        probes[k] = {"mean_embedding": probe_tasks(emb, y, splits, c_grid=[0.1]),
                     "bag_of_codes": probe_tasks(boc, y, splits, c_grid=[0.1])}
    out["probe"] = {"users": len(user_ids), "tasks": sorted(y), "protocol": "u2qt_core.evaluation.probes, C=0.1, 30% test users",
                    # None where no task has 5 users of each class (tiny worlds)
                    **{k: ({rep: r["avg_auc"] for rep, r in probes[k].items()} if k in probes else None) for k in encoders},
                    "per_task": probes}
    return out, codes["fp32"]


def numeric_path_lines(results: dict) -> list[str]:
    """The summary lines of both sections (none when they did not run)."""
    lines = []
    if "int8" in results:
        i = results["int8"]
        lines.append(f"  int8 encoder: {i['int8_over_fp32']:.2f}x fp32, {100 * i['changed_codes_share']:.1f}% codes changed, "
                     f"probe AUC fp32 {i['probe']['fp32']} int8 {i['probe']['int8']}")
    if "bf16_autocast" in results:
        b = results["bf16_autocast"]
        levels = " / ".join(f"{100 * v:.1f}" for v in b["per_level"])
        lines.append(f"  bf16 autocast (GPU path, CPU stand-in): {100 * b['agreement']:.1f}% of {b['documents']} documents "
                     f"keep their full code tuple (per level {levels} %)")
    return lines
