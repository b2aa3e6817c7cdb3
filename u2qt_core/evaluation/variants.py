"""The U²QT-AAAI tokenizer beside the main (FOUNDv2) tokenizer: codes aligned to the evaluation's
input rows, the cost figures of each tokenizer, and the side-by-side section of the report.

Shapes: a U²QT tokenizer codes *user-days*: ``day_users [N]``, ``day_days [N]`` and
``day_codes[source]`` int ``[N, L]`` (-1 where the user-day lacks the source); the evaluation's
probes read *input rows*: ``row_users[source] [n_s]``, ``row_days[source] [n_s]``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from u2qt_core.errors import InputError

__all__ = ["align_codes", "tokenizer_costs", "per_thousand", "VARIANT_ROWS", "side_by_side"]

#: The representations of the side-by-side table: (key in ``representations``, row label).
VARIANT_ROWS = (
    ("tokens_bag", "FOUNDv2 tokens: bag of codes"),
    ("tokens_vectors", "FOUNDv2 tokens: mean codebook vector"),
    ("u2qt_bag", "U²QT-AAAI tokens: bag of codes"),
    ("u2qt_vectors", "U²QT-AAAI tokens: mean codebook vector"),
    ("continuous", "continuous document embeddings (baseline)"),
)


def align_codes(day_users: np.ndarray, day_days: np.ndarray, day_codes: dict[str, np.ndarray],
                row_users: dict[str, np.ndarray], row_days: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The user-day codes of every input row: ``{source: int64 [n_s, L]}`` in ``row_*`` order.
    Raises :class:`InputError` when a row's user-day is missing or has no codes for its source."""
    index = pd.Series(np.arange(len(day_users)), index=pd.MultiIndex.from_arrays(
        [np.asarray(day_users, np.int64), np.asarray(day_days, np.int64)]))
    out: dict[str, np.ndarray] = {}
    for source, users in row_users.items():
        if source not in day_codes:
            raise InputError(f"source {source!r}: no U²QT codes")
        where = index.reindex(pd.MultiIndex.from_arrays([np.asarray(users, np.int64),
                                                         np.asarray(row_days[source], np.int64)]))
        if where.isna().any():
            raise InputError(f"source {source!r}: {int(where.isna().sum())} input rows have no U²QT user-day")
        codes = np.asarray(day_codes[source])[where.to_numpy(np.int64)].astype(np.int64)
        if (codes < 0).any():
            raise InputError(f"source {source!r}: {int((codes < 0).any(axis=1).sum())} input rows got no U²QT codes")
        out[source] = codes
    return out


def per_thousand(value: float, count: int) -> float:
    """``value`` per 1,000 of ``count`` (NaN without any)."""
    return 1000.0 * value / count if count else float("nan")


def tokenizer_costs(metrics: dict[str, Any], *, train_seconds: float, train_cpu_seconds: float, users: int,
                    steps: int, batch: str) -> dict[str, Any]:
    """A tokenizer's figures from :func:`u2qt_core.metrics.codebook_metrics`: utilization per level
    ``[L]`` (codes used / codes available at the level), the row-weighted collision rate of each
    source's L-code tuple, and training wall / CPU seconds per 1,000 training users."""
    per_source = metrics.get("per_source", {})
    rows = sum(e["rows"] for e in per_source.values())
    return {
        "utilization_per_level": [float(e["utilization"]) for e in metrics.get("per_level", [])],
        "collision_rate": (sum(e["collision_rate"] * e["rows"] for e in per_source.values()) / rows
                           if rows else float("nan")),
        "collision_rate_per_source": {s: float(e["collision_rate"]) for s, e in per_source.items()},
        "train_seconds": float(train_seconds), "train_cpu_seconds": float(train_cpu_seconds),
        "train_users": int(users), "steps": int(steps), "batch": batch,
        "train_seconds_per_1k_users": per_thousand(train_seconds, users),
        "train_cpu_seconds_per_1k_users": per_thousand(train_cpu_seconds, users),
    }


def _num(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def side_by_side(variant: dict[str, Any], reps: dict[str, dict], tasks: list[str]) -> list[str]:
    """Markdown lines of the report's U²QT-vs-FOUNDv2 section from ``results["u2qt"]`` and the
    probed ``representations``: probe AUC / KS per task with the 95 % intervals, then the costs."""
    out = ["## U²QT-AAAI beside FOUNDv2 (same inputs, same probes, same bootstrap resamples)", "",
           variant.get("description", ""), ""]
    header = ["representation", *[f"{t} AUC [95% CI] / KS" for t in tasks], "avg AUC [95% CI]", "avg KS"]
    out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, label in VARIANT_ROWS:
        entry = reps.get(key)
        if not entry:
            continue
        cells = []
        for task in tasks:
            t = entry["tasks"].get(task)
            ci = t.get("auc_ci") if t else None
            cells.append("-" if not t else f"{t['auc']:.4f} [{ci[0]:.3f}, {ci[1]:.3f}] / {t['ks']:.3f}" if ci
                         else f"{t['auc']:.4f} / {t['ks']:.3f}")
        ci = entry.get("avg_auc_ci")
        avg = f"{entry['avg_auc']:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")
        out.append(f"| {label} | " + " | ".join(cells) + f" | {avg} | {entry['avg_ks']:.4f} |")
    diffs = variant.get("differences", {})
    if diffs:
        out += ["", "Paired differences of avg AUC (U²QT minus FOUNDv2; 95 % interval over the same bootstrap "
                    "resamples of the test users): " + "; ".join(
                        f"{name} **{d['diff']:+.4f}**" + (f" [{d['diff_ci'][0]:+.4f}, {d['diff_ci'][1]:+.4f}]"
                                                          if "diff_ci" in d else "")
                        for name, d in diffs.items()) + "."]
    costs = variant.get("costs", {})
    found, u2qt, cont = costs.get("foundv2", {}), costs.get("u2qt", {}), costs.get("continuous", {})
    out += ["", "| tokenizer | utilization per level | collision rate | train CPU s / 1k users (wall s) | "
                "steps x batch | inference CPU s / 1k documents | storage B / user-day (data, Delta) |",
            "|---|---|---|---|---|---|---|"]
    for label, c in (("FOUNDv2 (main)", found), ("U²QT-AAAI", u2qt), ("continuous embeddings", cont)):
        util = ", ".join(f"{u:.2f}" for u in c.get("utilization_per_level", [])) or "-"
        train = (f"{_num(c.get('train_cpu_seconds_per_1k_users'), 1)} ({_num(c.get('train_seconds_per_1k_users'), 1)})"
                 if "train_seconds" in c else "0 (no training)")
        out.append(f"| {label} | {util} | {_num(c.get('collision_rate'), 4)} | {train} | "
                   f"{c.get('steps', '-')} x {c.get('batch', '-')} | {_num(c.get('inference_cpu_per_1k_documents'), 2)} | "
                   f"{_num(c.get('bytes_per_user_day'), 1)} |")
    cb = cont.get("bytes_per_user_day")
    out += ["", f"Storage: continuous / FOUNDv2 tokens **{_ratio(cb, found.get('bytes_per_user_day'))}**, continuous / "
                f"U²QT tokens **{_ratio(cb, u2qt.get('bytes_per_user_day'))}** (the paper claims 84x). Training: "
                f"U²QT takes **{_ratio(u2qt.get('train_cpu_seconds'), found.get('train_cpu_seconds'))}** FOUNDv2's CPU time "
                f"(the paper claims U²QT trains 3.5x faster, i.e. 0.3x). Inference: U²QT takes "
                f"**{_ratio(u2qt.get('inference_cpu_per_1k_documents'), found.get('inference_cpu_per_1k_documents'))}** "
                "FOUNDv2's CPU time per document.",
            ""]
    out += [f"* {note}" for note in variant.get("notes", [])]
    return out + [""]
