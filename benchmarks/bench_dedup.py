"""The ``dedup`` section of :mod:`benchmarks.bench_inference`: the night's ``stage`` with
``inference.dedup_documents`` off and on, side by side, at several repeat shares of the world
(``repeat_document_share``; ``null`` = the world as generated, the demo's ~10 %).

Per share (a fresh lake, one tokenizer trained on the first share's world serves all):

* ``stage``: the whole stage of the world's last date, dedup off and on **interleaved** (round
  ``r`` runs both, order rotating), ``repeats`` rounds after one untimed warm-up stage of each
  mode (Python workers load the models, first plans compile), CPU-seconds of the process tree and wall seconds (medians and all);
* ``encoder``: the bare text encoder in this process over all the date's documents and over the
  distinct (source, document) ones only, interleaved: the ceiling of what the fold can save;
* ``documents`` / ``documents_embedded`` from the stage's own metrics, and the measured repeat
  share ``1 - embedded / documents``.

``on_over_off_cpu`` < 1 is a saving; at share 0 its excess over 1 is the fold's own cost (one
more aggregate of the day's documents and the join back).
"""
from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.common import repo_path, time_interleaved
from benchmarks.cpu_meter import TreeCpuMeter

log = logging.getLogger("benchmarks.inference.dedup")


def _with_dedup(settings, dedup: bool):
    return settings.model_copy(update={"inference": settings.inference.model_copy(update={"dedup_documents": dedup})})


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def bench_dedup_share(spark, settings, info, event_date: str, repeats: int) -> dict[str, Any]:
    """Stage off / on interleaved, and the bare encoder over all vs distinct documents."""
    from benchmarks.bench_inference import _documents
    from pipelines.night.day_run import DayRun, default_run_id
    from pipelines.night.stage import stage
    from u2qt_core.encoders.text import TextEncoder

    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    metrics: dict[str, Any] = {}

    def staged(mode: str, record: bool = True):
        def call() -> None:
            run = DayRun(spark, _with_dedup(settings, mode == "on"), event_date, default_run_id(event_date), info)
            with TreeCpuMeter() as m:
                result = stage(run)
            metrics[mode] = {"documents": result.documents, "documents_embedded": result.documents_embedded,
                             "token_rows": result.token_rows}
            if record:
                runs[mode].append({"cpu_s": m.cpu_s, "wall_s": m.wall_s})
            log.info("dedup %s: stage %.1f CPU-s, %.1f s wall, %s", mode, m.cpu_s, m.wall_s, metrics[mode])
        return call

    # warm-up, both modes: the first run of 2026-12-06 (one warm-up, "on") still found the first
    # measured "off" stage cold (65 CPU-s against 29 for the next one)
    for mode in ("on", "off"):
        staged(mode, record=False)()
    time_interleaved({mode: staged(mode) for mode in ("off", "on")}, repeats=repeats, warmup=0)

    frame, docs = _documents(spark, settings, event_date)
    frame.unpersist()
    texts = docs["document"].tolist()
    distinct = docs.drop_duplicates(["source", "document"])["document"].tolist()
    encoder = TextEncoder(settings.encoder)
    encoder_cpu: dict[str, list[float]] = {"all": [], "distinct": []}

    def encode(name: str, batch: list[str]):
        def call() -> None:
            start = time.process_time()
            encoder.encode(batch)
            encoder_cpu[name].append(time.process_time() - start)
        return call

    time_interleaved({"all": encode("all", texts), "distinct": encode("distinct", distinct)}, repeats=repeats, warmup=0)

    stage_out = {mode: {"cpu_s_median": _median([r["cpu_s"] for r in rs]), "wall_s_median": _median([r["wall_s"] for r in rs]),
                        "runs": rs} for mode, rs in runs.items()}
    documents = metrics["on"]["documents"]
    return {
        "documents": documents,
        "documents_embedded": {mode: m["documents_embedded"] for mode, m in metrics.items()},
        "distinct_documents": len(distinct),
        "repeat_share": 1 - metrics["on"]["documents_embedded"] / documents if documents else None,
        "stage": stage_out,
        "on_over_off_cpu": stage_out["on"]["cpu_s_median"] / stage_out["off"]["cpu_s_median"],
        "on_over_off_wall": stage_out["on"]["wall_s_median"] / stage_out["off"]["wall_s_median"],
        "saved_cpu_s": stage_out["off"]["cpu_s_median"] - stage_out["on"]["cpu_s_median"],
        "encoder": {"all_cpu_s_median": _median(encoder_cpu["all"]), "distinct_cpu_s_median": _median(encoder_cpu["distinct"]),
                    "all_cpu_s": encoder_cpu["all"], "distinct_cpu_s": encoder_cpu["distinct"]},
    }


def bench_dedup(spark, params: dict[str, Any], tmp_root: Path) -> dict[str, Any]:
    """:func:`bench_dedup_share` at each of ``dedup.repeat_shares`` (``null``: the world as
    generated), each on its own lake of the ``dedup.world_overrides`` world (default: the section's
    ``world_overrides``); one tokenizer, trained on the first share's world."""
    from benchmarks.common import pipeline_settings, train_promoted
    from pipelines.night.day_run import load_tokenizer_info
    from pipelines.world import load_world_config, write_world

    section = params["dedup"]
    overrides = dict(section.get("world_overrides") or params.get("world_overrides") or {})
    model_dir = tmp_root / "dedup-model"
    out: dict[str, Any] = {"world": params["world"], "world_overrides": overrides, "repeats": int(section.get("repeats", 2)),
                           "shares": []}
    info = None
    for share in section["repeat_shares"]:
        world = load_world_config(repo_path(params["world"]), {**overrides, "repeat_document_share": share})
        label = "natural" if share is None else f"{share:g}"
        settings = pipeline_settings(tmp_root / f"dedup-{label}", model_dir, params.get("settings_overrides"))
        write_world(spark, world, settings.tables_root)
        if info is None:
            train_promoted(spark, settings)
            info = load_tokenizer_info(settings)
        event_date = world.history_dates()[-1].isoformat()
        result = bench_dedup_share(spark, settings, info, event_date, out["repeats"])
        out["shares"].append({"repeat_document_share": share, "users": world.n_users, "event_date": event_date, **result})
        log.info("dedup at share %s: %d docs, %.0f%% repeats, stage on/off CPU %.2f", label, result["documents"],
                 100 * (result["repeat_share"] or 0), result["on_over_off_cpu"])
    return out


def summary_lines(result: dict[str, Any]) -> list[str]:
    lines = []
    for s in result["shares"]:
        st = s["stage"]
        lines.append(
            f"  dedup at repeat_document_share={s['repeat_document_share']}: {s['documents']} docs, "
            f"{100 * (s['repeat_share'] or 0):.0f}% repeats; stage CPU-s off {st['off']['cpu_s_median']:.1f} "
            f"on {st['on']['cpu_s_median']:.1f} (x{s['on_over_off_cpu']:.2f}), wall off {st['off']['wall_s_median']:.1f}s "
            f"on {st['on']['wall_s_median']:.1f}s; bare encoder all {s['encoder']['all_cpu_s_median']:.1f} "
            f"distinct {s['encoder']['distinct_cpu_s_median']:.1f} CPU-s")
    return lines
