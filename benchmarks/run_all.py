"""Run every benchmark and write a summary.

    python -m benchmarks.run_all --out bench_results [--config conf/bench.yaml] [--quick]
        [--skip model|pipeline]

Writes ``bench_model.json``, ``bench_pipeline.json``, ``summary.json`` (the headline numbers,
each with its source file) and ``summary.md`` (a table ready to paste into a README).
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from benchmarks import bench_model, bench_pipeline
from benchmarks.common import load_bench_config, setup_logging, write_result

log = logging.getLogger("benchmarks.run_all")


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def summarize(model: dict | None, pipeline: dict | None) -> dict[str, Any]:
    """Headline rows ``{section, metric, value, unit, note}`` from the two payloads."""
    rows: list[dict[str, Any]] = []

    def add(section: str, metric: str, value: Any, unit: str, note: str = "") -> None:
        rows.append({"section": section, "metric": metric, "value": value, "unit": unit, "note": note})

    machine = (model or pipeline or {}).get("machine", {})
    if model:
        sec = model["sections"]
        if "mrqvae" in sec:
            m = sec["mrqvae"]
            p = m["parameters"]
            for name, r in m["cpu"].items():
                add("MRQ-VAE quantize", f"{p['preset'].split('/')[-1]} batch {r['batch_size']}, {r['threads']} thread(s)",
                    r["embeddings_per_s_median"], "embeddings/s",
                    f"fp32 CPU, median of {len(r['repeats_s'])}")
            for name, r in m["cuda"].items():
                add("MRQ-VAE quantize", f"batch {r['batch_size']}, {r['device']}", r["embeddings_per_s_median"], "embeddings/s")
        if "encoder" in sec:
            e = sec["encoder"]
            for name, r in e["results"].items():
                if name.startswith("fixed"):
                    label = f"~{r['tokens_per_document']:.0f} tokens/doc, batch {e['parameters']['batch_size']}, {r['threads']} thread(s)"
                else:
                    order = "length-sorted" if r["length_sorted"] else "unsorted"
                    label = f"world mix (~{r['tokens_per_document']:.0f} tokens/doc), {order}, {r['threads']} thread(s)"
                add("MiniLM encoder", label, r["documents_per_s_median"], "docs/s")
            for name, v in e["ratios"].items():
                add("MiniLM encoder", f"ratio {name.replace('_', ' ')}", v, "x", "same run, interleaved")
        if "quality" in sec:
            q = sec["quality"]
            for name, entry in q["presets"].items():
                util = entry["utilization_per_codebook"]
                coll = entry["collision_rate_per_source"]
                shared = {k: v for k, v in util.items() if k.startswith("shared.")}
                specific = {k: v for k, v in util.items() if not k.startswith("shared.")}
                note = f"K={entry['num_codes']}, {entry['steps']} steps, {q['parameters']['world'].split('/')[-1]}"
                for k, v in shared.items():
                    add(f"Quality ({name})", f"utilization {k}", v, "share", note)
                if specific:
                    add(f"Quality ({name})", "utilization source-specific (min / max)",
                        f"{min(specific.values()):.3f} / {max(specific.values()):.3f}", "share", note)
                add(f"Quality ({name})", "collision rate per source (max)", max(coll.values()), "share",
                    ", ".join(f"{s} {v:.3f}" for s, v in coll.items()))
    if pipeline:
        r = pipeline["results"]
        p = r["parameters"]
        size = f"{p['n_users']} users x {p['n_days']} days"
        if "reused" not in r["world"]:   # (a smoke test hands the benchmark a trained lake)
            add("Pipeline", "world write", r["world"]["seconds"], "s", f"{size}, {r['world']['rows'].get('raw_events')} raw_events")
            add("Pipeline", "train (embed + MRQ-VAE)", r["train"]["seconds"], "s",
                f"embed {r['train']['embed_seconds']:.0f}s, MRQ-VAE {r['train']['train_seconds']:.0f}s")
        for d in r["days"]:
            tag = f"{d['event_date']}{' re-run' if d.get('rerun') else ''}"
            for step in ("stage", "quality", "publish", "publish_day_tokens"):
                if f"{step}_seconds" in d:
                    add("Pipeline", f"{tag}: {step.replace('_', ' ')}", d[f"{step}_seconds"], "s")
            if "stage_documents_per_s" in d:
                add("Pipeline", f"{tag}: documents through stage", d["stage_documents_per_s"], "docs/s",
                    f"{d['text_documents']} documents, {d['quality']['active_users']} active users")
        if r.get("bytes_per_token_row"):
            add("Pipeline", "user_day_tokens size", r["bytes_per_token_row"], "bytes/row",
                f"{r['table_sizes']['user_day_tokens']['rows']} rows, live snapshot")
        hist = r["table_sizes"].get("user_token_history_base")
        if hist:
            add("Pipeline", "user_token_history_base size", hist["live_bytes_per_row"], "bytes/row", f"{hist['rows']} rows")
    return {"machine": machine, "rows": rows,
            "wall_seconds": {"bench_model": (model or {}).get("wall_seconds"),
                             "bench_pipeline": (pipeline or {}).get("wall_seconds")}}


def markdown(summary: dict[str, Any]) -> str:
    m = summary["machine"]
    lines = [
        f"Benchmarks ({m.get('timestamp_utc', '')}): {m.get('cpu_count')} x {m.get('cpu_model')}, "
        f"{m.get('memory_gb')} GB, {m.get('device')}, torch {m.get('torch')}, commit {str(m.get('git_commit'))[:12]}; "
        f"load average at start {m.get('load_average_1_5_15')} (shared machine: medians, ratios from the same run).",
        "",
        "| Section | Measurement | Value | Unit | Note |",
        "|---|---|---:|---|---|",
    ]
    for row in summary["rows"]:
        digits = 3 if row["unit"] in ("share", "x") else (2 if row["unit"] == "s" else 1)
        lines.append(f"| {row['section']} | {row['metric']} | {_fmt(row['value'], digits)} | {row['unit']} | {row['note']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="bench_results")
    parser.add_argument("--config", default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip", action="append", default=[], choices=["model", "pipeline"])
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    config = load_bench_config(args.config, quick=args.quick)
    out = Path(args.out)
    started = time.perf_counter()
    model = bench_model.run(config, out) if "model" not in args.skip else _previous(out, "bench_model")
    pipeline = bench_pipeline.run(config, out) if "pipeline" not in args.skip else _previous(out, "bench_pipeline")
    summary = summarize(model, pipeline)
    summary["wall_seconds"]["total"] = time.perf_counter() - started
    write_result(out, "summary", summary)
    (out / "summary.md").write_text(markdown(summary), encoding="utf-8")
    log.info("wrote %s\n%s", out / "summary.md", markdown(summary))
    return 0


def _previous(out: Path, name: str) -> dict | None:
    """A skipped benchmark's earlier result, if one is there (so the summary stays complete)."""
    path = out / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


if __name__ == "__main__":
    raise SystemExit(main())
