"""The evaluation's report text takes its facts from the config and the data, not constants."""
from __future__ import annotations

from u2qt_core.evaluation.config import EvalConfig
from u2qt_core.evaluation.summary import alignment_note, notes, target_summary


def _rep(auc: float, per_task: dict[str, float]) -> dict:
    return {"label": f"rep {auc}", "avg_auc": auc, "tasks": {t: {"auc": a} for t, a in per_task.items()}}


def test_notes_and_alignment_note_follow_world_and_data() -> None:
    cfg = EvalConfig.model_validate({"alignment": {"description_days": 2, "period": 4, "window_days": 2}})
    note = alignment_note(cfg, history_days=9)
    assert "full 9-day history" in note and "up to day 7" in note and "14-day" not in note
    text = " ".join(notes({}, cfg, label_window_days=5, text_dims=768, tabular_dims=11))
    assert "in the 5 days after the history" in text and "768 text dims and 11 tabular dims" in text
    assert "1920" not in text and " 7 days" not in text


def test_target_summary_checks_both_targets() -> None:
    tasks = ["a", "b", "c"]
    reps = {"tokens_bag": _rep(0.70, {"a": .8, "b": .6, "c": .7}), "tokens_vectors": _rep(0.75, {"a": .9, "b": .7, "c": .65}),
            "continuous": _rep(0.755, {"a": .8, "b": .7, "c": .7}), "tfidf": _rep(0.7, {"a": .7, "b": .6, "c": .7})}
    summary = target_summary(reps, tasks)
    assert summary["best_token_representation"] == "tokens_vectors"
    assert summary["within_0.01_of_continuous"] is True and summary["tasks_beating_tfidf"] == ["a", "b"]
    assert "2/3 tasks" in summary["text"] and "NOT met" in summary["text"]


def test_worlds_summary_gives_paired_difference_intervals_per_world() -> None:
    from u2qt_core.evaluation.summary import COMPARISONS, compare, worlds_summary

    def with_draws(auc: float, draws: list[float]) -> dict:
        return {**_rep(auc, {"a": auc}), "avg_auc_draws": draws}

    reps = {"tokens_vectors": with_draws(0.77, [0.76, 0.77, 0.78, 0.79]),
            "continuous": with_draws(0.72, [0.70, 0.73, 0.72, 0.74]),
            "tabular": _rep(0.60, {"a": 0.60})}
    c = compare(reps, "tokens_vectors", "continuous")
    assert c["diff"] == 0.77 - 0.72 and c["diff_ci"][0] >= 0.04 and c["diff_ci"][1] <= 0.07   # draw by draw
    assert "diff_ci" not in compare(reps, "tokens_vectors", "tabular") and compare(reps, "tokens_fused", "x") is None
    meta = {"world_config": "w.yaml", "users": 10, "days": 3}
    text, table = worlds_summary({"one": {"representations": reps, "meta": meta},
                                  "two": {"representations": reps, "meta": meta}})
    assert set(table) == {name for name, _, _ in COMPARISONS} and set(table[COMPARISONS[2][0]]) == {"one", "two"}
    assert "| comparison | one | two |" in text and "0.7700 vs 0.7200: **+0.0500** [+0.0" in text
    assert table[COMPARISONS[0][0]]["one"] is None     # no fused embedding in these results: '-'
