"""The warm tokenize UDF at several input sizes, beside the bare encoder on the same documents:
which part of the UDF's gap is a fixed cost per Spark job, and which part every document pays.

A section of :mod:`benchmarks.bench_inference` (``udf_sizes`` in ``conf/bench.yaml``): the date's
documents repeated ``m`` times for each multiplier (the UDF embeds every row it is given; folding
repeats happens before it, in ``stage``). For each size, one after the other:

* ``bare``: ``TextEncoder.encode`` over the same ``m`` x documents in this process (CPU-s of this
  process; its global length sort packs the repeats as well as the UDF's per-batch sort can);
* ``one_worker``: the UDF over a cached frame of them in one partition, so one Python worker at a
  time, as the bare loop is one process (``noop`` sink; CPU-s of the process tree: driver, JVM,
  Python workers);
* ``side_by_side``: the same in ``inference.partitions`` partitions, the Python workers of every
  task slot at once (on a 2-core machine they share caches and memory bandwidth).

Each is fitted by least squares as ``cpu_s = fixed_cpu_s + cpu_s_per_doc x documents``; the bare
slope over a UDF slope is the UDF's rate at the margin, what a production task of millions of
documents runs at once its fixed part is amortised.
"""
from __future__ import annotations

import functools
import logging
import time
from typing import Any

from benchmarks.common import fixed_plus_per_doc
from benchmarks.cpu_meter import TreeCpuMeter

log = logging.getLogger("benchmarks.inference")


def _fit(runs: list[dict[str, float]]) -> dict[str, float]:
    return fixed_plus_per_doc([r["docs"] for r in runs], [r["cpu_s"] for r in runs])


def bench_udf_sizes(docs_frame, tokenize, texts: list[str], encode, multipliers: list[int],
                    partitions: int) -> dict[str, Any]:
    """The bare ``encode`` and the warm UDF ``tokenize`` over ``docs_frame`` (rows of user_id,
    event_date, source, document, features; ``texts`` its documents) repeated each of
    ``multipliers`` times; the UDF on one partition and on ``partitions``. Returns
    ``{"bare" | "one_worker" | "side_by_side": {"runs", "fit"}, ...}``, the UDF layouts with
    ``over_bare`` per run and ``marginal_over_bare``."""
    layouts = {"one_worker": 1, "side_by_side": partitions}

    def udf_run(m: int, parts: int) -> dict[str, float]:
        frame = functools.reduce(lambda a, b: a.unionAll(b), [docs_frame] * m).repartition(parts, "user_id").cache()
        frame.count()
        query = frame.select(tokenize("user_id", "event_date", "source", "document", "features").alias("codes"))
        with TreeCpuMeter() as meter:
            query.write.format("noop").mode("overwrite").save()
        frame.unpersist()
        return {"multiplier": m, "docs": len(texts) * m, "cpu_s": meter.cpu_s, "wall_s": meter.wall_s}

    for parts in layouts.values():          # warm-up: every worker of both layouts has run once
        udf_run(multipliers[0], parts)
    runs: dict[str, list[dict[str, float]]] = {"bare": [], **{k: [] for k in layouts}}
    for m in multipliers:
        started = time.process_time()
        encode(texts * m)
        runs["bare"].append({"multiplier": m, "docs": len(texts) * m, "cpu_s": time.process_time() - started})
        for layout, parts in layouts.items():
            run = udf_run(m, parts)
            run["over_bare"] = runs["bare"][-1]["cpu_s"] / run["cpu_s"] if run["cpu_s"] else None
            runs[layout].append(run)
    out: dict[str, Any] = {"multipliers": list(multipliers), "bare": {"runs": runs["bare"], "fit": _fit(runs["bare"])}}
    bare_slope = out["bare"]["fit"]["cpu_s_per_doc"]
    for layout, parts in layouts.items():
        fit = _fit(runs[layout])
        out[layout] = {"partitions": parts, "runs": runs[layout], "fit": fit,
                       "marginal_over_bare": bare_slope / fit["cpu_s_per_doc"] if fit["cpu_s_per_doc"] > 0 else None}
        log.info("udf sizes, %s (%d partitions): %s the bare encoder; fit %.2f CPU-s fixed + %.2f ms per doc "
                 "(bare %.2f + %.2f)", layout, parts, [round(r["over_bare"] or 0, 3) for r in runs[layout]],
                 fit["fixed_cpu_s"], fit["cpu_s_per_doc"] * 1000, out["bare"]["fit"]["fixed_cpu_s"], bare_slope * 1000)
    return out


def udf_sizes_lines(section: dict[str, Any]) -> list[str]:
    """One summary line per layout."""
    lines = []
    for layout in ("one_worker", "side_by_side"):
        s = section[layout]
        per_size = ", ".join(f"{r['multiplier']}x {r['over_bare'] or 0:.2f}" for r in s["runs"])
        marginal = s["marginal_over_bare"]
        lines.append(f"  warm UDF, {layout} ({s['partitions']} partitions): {per_size} the bare encoder; at the margin "
                     f"{marginal:.2f}x (fit {s['fit']['fixed_cpu_s']:.1f} CPU-s fixed + "
                     f"{s['fit']['cpu_s_per_doc'] * 1000:.2f} ms per doc; bare {section['bare']['fit']['fixed_cpu_s']:.1f} + "
                     f"{section['bare']['fit']['cpu_s_per_doc'] * 1000:.2f})" if marginal else f"  warm UDF, {layout}: {per_size}")
    return lines
