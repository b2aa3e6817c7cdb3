"""``u2qt report``: one self-contained HTML page picturing the nights of a date range.

One figure per measure, a line per source over the nights (inline SVG drawn by matplotlib, no
file beside the page): active users (documents per source), quarantine rate, collision rate,
codebook utilization (mean over levels), drift (the largest PSI and Jensen-Shannon divergence
over a source's levels) and fidelity (mean relative residual norm over the training mean). The
configured thresholds are drawn as dashed lines; events as vertical lines: a change of the
nights' tokenizer version (a promotion, from ``run_metrics``), a table-generation switch (a
retokenization, ``table_generations``) and a night that marked its version due for retraining
(``run_metrics`` ``drift`` rows, the registry's ``retrain_due_since`` tag).

Every drawn element carries an id the page's readers (and tests) can find: ``fig-<measure>`` on
each ``<figure>``, ``threshold-<setting>`` on each threshold line, ``event-<kind>-<date>`` on each
event line, ``series-<source>`` on each source's line.
"""
from __future__ import annotations

import html
import io
import json
import logging
from datetime import date
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipelines.config.settings import PipelineSettings
from pipelines.night.drift import excess
from pipelines.dates import date_range
from pipelines.lake import tables
from pipelines.lake.lake import Lake

log = logging.getLogger(__name__)

ALL = "all sources"


def _read(lake: Lake, name: str):
    return lake.read(name) if lake.exists(name) else None


def night_metrics(spark: SparkSession, settings: PipelineSettings, start: str, end: str) -> dict[str, dict]:
    """Per date: the latest ``quality`` and ``drift`` records of ``run_metrics`` (metrics_json
    parsed) and the version of the night: ``{date: {"quality": {...}, "drift": {...}, "version": v}}``."""
    frame = _read(Lake(spark, settings), tables.RUN_METRICS.name)
    out: dict[str, dict] = {}
    if frame is None:
        return out
    rows = (frame.where(F.col("event_date").between(F.lit(start).cast("date"), F.lit(end).cast("date")))
            .where(F.col("step").isin("quality", "drift")).orderBy("recorded_at").collect())
    for r in rows:   # later records of a date win (a re-run)
        day = out.setdefault(str(r["event_date"]), {})
        day[r["step"]] = {**json.loads(r["metrics_json"] or "{}"), "_status": r["status"]}
        day["version"] = r["tokenizer_version"]
    return out


def quality_rows(spark: SparkSession, settings: PipelineSettings, start: str, end: str) -> list[dict]:
    """``token_quality`` rows of the range from every table generation (the current one first: a
    date retokenized since is read from the generation analysts see)."""
    lake = Lake(spark, settings)
    names = [lake.current().generation] + [g["generation"] for g in reversed(lake.switches())] + [""]
    seen, out = set(), []
    for name in dict.fromkeys(names):
        frame = _read(lake.at(name), tables.TOKEN_QUALITY.name)
        if frame is None:
            continue
        for r in frame.where(F.col("event_date").between(F.lit(start).cast("date"), F.lit(end).cast("date"))).collect():
            key = (str(r["event_date"]), r["source"], r["level"])
            if key not in seen:
                seen.add(key)
                out.append(r.asDict())
    return out


def night_events(nights: dict[str, dict]) -> list[dict]:
    """The events :func:`night_metrics` shows: a night whose tokenizer version differs from the
    night before (a promotion) and a night whose drift marked its version due for retraining."""
    out, previous = [], None
    for d in sorted(nights):
        version = nights[d].get("version")
        if previous is not None and version != previous:
            out.append({"kind": "promotion", "date": d, "label": f"tokenizer {version}"})
        previous = version
        if nights[d].get("drift", {}).get("_status") == "retrain_due":
            out.append({"kind": "retrain_due", "date": d, "label": f"{version} due for retraining"})
    return out


def events(spark: SparkSession, settings: PipelineSettings, nights: dict[str, dict], start: str, end: str) -> list[dict]:
    """``[{kind, date, label}]``: promotions (the nights' version changes), retokenizations
    (generation switches) and nights that marked their version due for retraining."""
    out = night_events(nights)
    for switch in Lake(spark, settings).switches():
        d = str(switch["switched_at"].date())
        if start <= d <= end:
            out.append({"kind": "retokenization", "date": d,
                        "label": f"generation {switch['generation'] or 'first'} ({switch['tokenizer_version']})"})
    try:
        from pipelines.tokenizer import registry

        for v in registry.versions(settings):
            since = v.tags.get(registry.RETRAIN_SINCE_TAG)
            if since and start <= since <= end and not any(e["kind"] == "retrain_due" and e["date"] == since for e in out):
                out.append({"kind": "retrain_due", "date": since, "label": f"{v.tokenizer_version} due for retraining"})
            answered = json.loads(v.tags.get(registry.RETRAIN_OF_TAG) or "null")
            if answered and start <= answered["since"] <= end:
                out.append({"kind": "retrained", "date": answered["since"],
                            "label": f"{v.tokenizer_version} trained to replace {answered['version']} (gates "
                                     f"{ {'true': 'passed', 'false': 'failed'}.get(v.tags.get(registry.PASSED_TAG), 'not run')})"})
    except Exception as exc:  # noqa: BLE001 -- a registry out of reach leaves its events out, named in the log
        log.warning("report: registry not read (%s): its retraining tags are not drawn", exc)
    return sorted(out, key=lambda e: (e["date"], e["kind"]))


def series(nights: dict[str, dict], quality: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """``{measure: {source: {date: value}}}`` of the figures."""
    out: dict[str, dict[str, dict[str, float]]] = {m: {} for m, *_ in FIGURES}
    for d, night in nights.items():
        q = night.get("quality")
        if not q:
            continue
        for source, rows in (q.get("rows_per_source") or {}).items():
            out["active_users"].setdefault(source, {})[d] = rows
        out["quarantine_rate"].setdefault(ALL, {})[d] = q.get("quarantine_rate")
        out["collision_rate"].setdefault(ALL, {})[d] = q.get("collision_rate")
    grouped: dict[tuple[str, str], list[dict]] = {}
    for r in quality:
        grouped.setdefault((r["source"], str(r["event_date"])), []).append(r)
    for (source, d), rows in grouped.items():
        def pick(values):
            values = [v for v in values if v is not None]
            return values or None
        if (u := pick([r["utilization"] for r in rows])):
            out["utilization"].setdefault(source, {})[d] = sum(u) / len(u)
        for m in ("psi", "js"):        # what the gates judge: above the night's sampling noise
            if (v := pick([excess(r, m) if r.get("psi_judged", True) else None for r in rows])):
                out[m].setdefault(source, {})[d] = max(v)
        first = rows[0]
        reference = first.get("reference_residual_mean") or first["train_residual_mean"]
        if first["residual_mean"] is not None and reference:
            out["residual_ratio"].setdefault(source, {})[d] = first["residual_mean"] / reference
    return out


#: (measure, title, thresholds: [(setting name, value of settings)])
FIGURES = (
    ("active_users", "Active users (documents per source)", lambda s: []),
    ("quarantine_rate", "Quarantine rate (raw rows)", lambda s: [("quality.max_quarantine_rate", s.quality.max_quarantine_rate)]),
    ("collision_rate", "Collision rate (full token tuples)", lambda s: [("quality.max_collision_rate", s.quality.max_collision_rate)]),
    ("utilization", "Codebook utilization (mean over levels)", lambda s: [("quality.min_level_utilization", s.quality.min_level_utilization)]),
    ("psi", "Drift: population stability index above its sampling noise (largest judged level)", lambda s: [("drift.warn_psi", s.drift.warn_psi), ("drift.fail_psi", s.drift.fail_psi)]),
    ("js", "Drift: Jensen-Shannon divergence above its sampling noise (largest judged level)", lambda s: [("drift.warn_js", s.drift.warn_js), ("drift.fail_js", s.drift.fail_js)]),
    ("residual_ratio", "Fidelity: mean ||residual|| / ||latent||, over the held-out days' (else training's)",
     lambda s: [("drift.warn_residual_ratio", s.drift.warn_residual_ratio), ("drift.fail_residual_ratio", s.drift.fail_residual_ratio)]),
)
EVENT_COLORS = {"promotion": "tab:green", "retokenization": "tab:purple", "retrain_due": "tab:red", "retrained": "tab:blue"}


def figure_svg(measure: str, title: str, days: list[str], lines: dict[str, dict[str, float]],
               thresholds: list[tuple[str, float]], marks: list[dict]) -> str:
    """One figure as an inline ``<svg>`` string (x: the nights of ``days``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.fonttype"] = "none"     # text stays text: the labels can be searched
    fig, ax = plt.subplots(figsize=(9, 3.2))
    x = list(range(len(days)))
    for source in sorted(lines):
        ys = [lines[source].get(d, float("nan")) for d in days]
        ax.plot(x, ys, marker="o", markersize=3, label=source, gid=f"series-{source}")
    for name, value in thresholds:
        ax.axhline(value, linestyle="--", color="tab:red" if ".fail" in name or "max_" in name else "tab:orange",
                   linewidth=1, gid=f"threshold-{name}", label=f"{name} = {value:g}")
    for e in marks:
        if e["date"] in days:
            ax.axvline(days.index(e["date"]), color=EVENT_COLORS[e["kind"]], linewidth=1.2, alpha=0.7,
                       gid=f"event-{e['kind']}-{e['date']}")
    ax.set_title(title, fontsize=10)
    step = max(1, len(days) // 12)
    ax.set_xticks(x[::step], [d[5:] for d in days[::step]], fontsize=7)
    ax.grid(alpha=0.3)
    if lines or thresholds:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def write_report(spark: SparkSession, settings: PipelineSettings, start: str, end: str, out: str | Path) -> dict:
    """Write the page for the nights ``start..end`` to ``out``; returns what it drew."""
    days = date_range(start, end)
    nights = night_metrics(spark, settings, start, end)
    quality = quality_rows(spark, settings, start, end)
    marks = events(spark, settings, nights, start, end)
    data = series(nights, quality)
    parts = []
    for measure, title, limits in FIGURES:
        svg = figure_svg(measure, title, days, data[measure], limits(settings), marks)
        parts.append(f'<figure id="fig-{measure}"><figcaption>{html.escape(title)}</figcaption>{svg}</figure>')
    legend = "".join(f"<li><b>{html.escape(e['date'])}</b> {html.escape(e['kind'])}: {html.escape(e['label'])}</li>"
                     for e in marks) or "<li>none</li>"
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>u2qt nights {start} .. {end}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}} figure{{margin:1em 0}} svg{{max-width:100%;height:auto}}</style>
</head><body>
<h1>u2qt nights {start} .. {end}</h1>
<p>{len(nights)} night(s) recorded of {len(days)}; tables at {html.escape(settings.tables_root)}.
Dashed lines: thresholds (conf/pipeline.yaml). Vertical lines: <span style="color:green">promotion</span>,
<span style="color:purple">retokenization</span>, <span style="color:red">due for retraining</span>,
<span style="color:blue">retrained</span> (a version trained while the promoted one was due, drawn at the night that marked it).</p>
<h2>Events</h2><ul id="events">{legend}</ul>
{''.join(parts)}
</body></html>
"""
    path = Path(out).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    log.info("report of %s..%s written to %s (%d nights, %d events)", start, end, path, len(nights), len(marks))
    return {"out": str(path.absolute()), "nights": len(nights), "figures": [m for m, *_ in FIGURES],
            "events": marks, "first": start, "last": end, "written": date.today().isoformat()}
