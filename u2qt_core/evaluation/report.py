"""Figures (matplotlib, Agg backend) and the Markdown report of the evaluation.

* :func:`plot_utilization` — codebook utilization per level and codebook (FOUNDv2 figure 5);
* :func:`plot_tsne` — t-SNE (scikit-learn) of per-source quantized embeddings, one panel per
  tokenizer design (FOUNDv2 figure 4);
* :func:`render_report` — ``report.md`` from the ``results.json`` structure.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402

__all__ = ["plot_utilization", "plot_tsne", "tsne_2d", "render_report", "markdown_table"]


def plot_utilization(per_codebook: dict[str, dict[str, Any]], path: Path, title: str = "") -> Path:
    """Grouped bars: one group per codebook owner (``shared`` or a source), one bar per level,
    height = share of the codebook's codes used on all embeddings."""
    owners: dict[str, dict[int, float]] = {}
    for name, entry in per_codebook.items():
        owner, level = name.rsplit(".", 1)
        owners.setdefault(owner, {})[int(level)] = float(entry["utilization"])
    order = sorted(owners, key=lambda o: (o != "shared", o))
    levels = sorted({lvl for d in owners.values() for lvl in d})
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(order)), 3.6))
    width = 0.8 / max(len(levels), 1)
    for j, level in enumerate(levels):
        xs = [i + (j - (len(levels) - 1) / 2) * width for i in range(len(order))]
        ys = [owners[o].get(level, np.nan) for o in order]
        ax.bar(xs, ys, width=width, label=f"level {level}")
    ax.set_xticks(range(len(order)), order)
    ax.set_ylabel("utilization (share of codes used)")
    ax.set_ylim(0, 1.05)
    ax.set_title(title or "Codebook utilization per level", fontsize=9)
    ax.legend(fontsize=8, ncol=min(len(levels), 4))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def tsne_2d(x: np.ndarray, *, perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
    """2-D t-SNE of ``x`` (PCA init, seeded)."""
    perplexity = min(perplexity, max(2.0, (len(x) - 1) / 3.0))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
        np.asarray(x, dtype=np.float64))


def plot_tsne(panels: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, *, scores: dict[str, float] | None = None) -> Path:
    """``panels[title] = (points [n, 2], source labels [n])`` side by side."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.6), squeeze=False)
    for ax, (title, (points, labels)) in zip(axes[0], panels.items()):
        for name in sorted(set(labels)):
            sel = labels == name
            ax.scatter(points[sel, 0], points[sel, 1], s=4, alpha=0.6, label=name)
        extra = f" (silhouette {scores[title]:.2f})" if scores and title in scores else ""
        ax.set_title(title + extra, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][-1].legend(markerscale=3, fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(header: list[str], rows: list[list[Any]], digits: int = 4) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(v, digits) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _auc_ks(entry: dict | None) -> str:
    if not entry:
        return "-"
    return f"{entry['auc']:.4f} / {entry['ks']:.4f}"


def _interval(entry: dict) -> str:
    """The 95 % bootstrap interval of an average AUC, or '-' without one."""
    ci = entry.get("avg_auc_ci")
    return f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "-"


def render_report(results: dict[str, Any], figures: dict[str, str]) -> str:
    """The Markdown report (figures referenced by relative path)."""
    tasks = results["tasks"]
    out: list[str] = ["# u2qt evaluation report", ""]
    meta = results.get("meta", {})
    out.append(
        f"World `{meta.get('world_config')}`: {meta.get('users')} users x {meta.get('days')} days, "
        f"{meta.get('inputs_total')} embedded (user, source, day) inputs {meta.get('inputs')}; "
        f"encoder {meta.get('encoder')}; main tokenizer {meta.get('tokenizer')}. "
        f"Wall time {meta.get('wall_seconds', float('nan')):.0f} s "
        f"(encoding {meta.get('embed_seconds', float('nan')):.0f} s{', cached' if meta.get('embed_cached') else ''})."
    )
    out.append("")
    probe = results.get("probe_protocol", "")
    if probe:
        out += [probe, ""]

    out += ["## User representation: linear probes (AUC / KS on held-out users)", ""]
    reps = results["representations"]
    rows = []
    for name, entry in reps.items():
        per_task = entry["tasks"]
        rows.append([entry["label"], entry.get("dim", "-")] + [_auc_ks(per_task.get(t)) for t in tasks]
                    + [entry.get("avg_auc"), _interval(entry), entry.get("avg_ks")])
    out.append(markdown_table(["representation", "dim", *tasks, "avg AUC", "95% CI", "avg KS"], rows))
    out.append("")
    summary = results.get("summary", {})
    if summary:
        out += ["**Targets.** " + summary.get("text", ""), ""]

    if results.get("u2qt"):
        from u2qt_core.evaluation.variants import side_by_side

        out += side_by_side(results["u2qt"], reps, tasks)

    if results.get("alignment"):
        out += ["## Alignment pretext tasks (FOUNDv2 table 5 analogue)", ""]
        rows = [[name, e.get("steps"), e.get("final_loss"), e["avg_auc"], _interval(e), e["avg_ks"]] +
                [_auc_ks(e["tasks"].get(t)) for t in tasks] for name, e in results["alignment"].items()]
        out.append(markdown_table(["task set", "steps", "final loss", "avg AUC", "95% CI", "avg KS", *tasks], rows))
        out += ["", results.get("alignment_note", ""), ""]

    if results.get("recommendation"):
        rec = results["recommendation"]
        out += ["## Recommendation: MaskNet CTR (FOUNDv2 table 8 analogue)", "", rec.get("protocol", ""), ""]
        ks = rec.get("hr_ks", [10, 20])
        rows = [[e["label"], "MaskNet", e["test_auc"]] + [e[f"hr@{k}"] for k in ks] + [e["best_epoch"], e["valid_auc"]]
                for e in rec["models"].values()]
        out.append(markdown_table(["features", "backbone", "test AUC", *[f"HR@{k}" for k in ks], "best epoch", "valid AUC"], rows))
        out.append("")

    if results.get("storage"):
        st = results["storage"]
        out += ["## Storage (Delta tables written with Spark, FOUNDv2 table 6 analogue)", "", st.get("layout", ""), ""]
        rows = []
        for key, label in (("tokens", "tokens `codes array<smallint>`"), ("embeddings", "embeddings `array<float>`")):
            e = st[key]
            rows.append([label, e["rows"], e["user_days"], e["files"], e["data_bytes"], e["total_bytes"],
                         e["data_bytes_per_user_day"], e["total_bytes_per_user_day"]])
        out.append(markdown_table(["table", "rows", "user-days", "files", "data bytes", "total bytes",
                                  "data B / user-day", "total B / user-day"], rows, digits=1))
        out += ["", f"Ratio embeddings / tokens: **{st['ratio_data']:.1f}x** on Parquet data, "
                    f"{st['ratio_total']:.1f}x with the Delta log.", ""]

    if results.get("ablation_codebooks"):
        out += ["## Ablation: codebook design and size (FOUNDv2 table 3 analogue)", "",
                results.get("ablation_note", ""), ""]
        rows = [[e["name"], e["volume"], e["avg_auc"], e["avg_ks"], e.get("min_utilization"), e.get("recon_cosine")]
                + [_auc_ks(e["tasks"].get(t)) for t in tasks] for e in results["ablation_codebooks"]]
        out.append(markdown_table(["design", "volume KxD", "avg AUC", "avg KS", "min util.", "recon cos", *tasks], rows))
        out.append("")
    if results.get("ablation_sources"):
        out += ["## Ablation: each source removed (tokenizer retrained without it; FOUNDv2 table 4 analogue)", ""]
        rows = [[e["name"], e["avg_auc"], e["avg_ks"]] + [_auc_ks(e["tasks"].get(t)) for t in tasks]
                for e in results["ablation_sources"]]
        out.append(markdown_table(["data", "avg AUC", "avg KS", *tasks], rows))
        out.append("")

    if figures:
        out += ["## Codebook analysis (FOUNDv2 section 6)", ""]
        for title, rel in figures.items():
            out += [f"**{title}**", "", f"![{title}]({rel})", ""]
    if results.get("codebook_metrics_summary"):
        out += [results["codebook_metrics_summary"], ""]
    if results.get("notes"):
        out += ["## Notes and limits", ""] + [f"* {n}" for n in results["notes"]] + [""]
    if results.get("timings"):
        out += ["## Timings (s)", "", markdown_table(["stage", "seconds"],
                                                    [[k, v] for k, v in results["timings"].items()], digits=1), ""]
    return "\n".join(out)
