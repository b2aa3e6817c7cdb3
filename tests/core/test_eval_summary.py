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
