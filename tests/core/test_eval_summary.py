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
    # issue 25 item 4: the tabular source's token alone and beside its raw features, against the raw features
    assert {(a, b) for _, a, b in COMPARISONS} >= {("tabular_token", "tabular"), ("tabular_raw_token", "tabular")}


def test_u2qt_codes_align_to_input_rows_and_costs_read_per_level_and_per_source() -> None:
    import numpy as np
    import pytest

    from u2qt_core.errors import InputError
    from u2qt_core.evaluation.variants import align_codes, side_by_side, tokenizer_costs

    day_users, day_days = np.array([1, 1, 2]), np.array([0, 3, 0])
    day_codes = {"x": np.array([[1, 2], [3, 4], [-1, -1]]), "y": np.array([[5, 6], [-1, -1], [7, 8]])}
    out = align_codes(day_users, day_days, day_codes, {"x": np.array([1, 1]), "y": np.array([2, 1])},
                      {"x": np.array([3, 0]), "y": np.array([0, 0])})
    assert out["x"].tolist() == [[3, 4], [1, 2]] and out["y"].tolist() == [[7, 8], [5, 6]]
    with pytest.raises(InputError, match="got no U²QT codes"):     # user 2 day 0 has no x
        align_codes(day_users, day_days, day_codes, {"x": np.array([2])}, {"x": np.array([0])})
    with pytest.raises(InputError, match="no U²QT user-day"):
        align_codes(day_users, day_days, day_codes, {"x": np.array([9])}, {"x": np.array([0])})

    metrics = {"per_level": [{"utilization": 0.5}, {"utilization": 0.25}],
               "per_source": {"x": {"rows": 30, "collision_rate": 0.1}, "y": {"rows": 10, "collision_rate": 0.5}}}
    c = tokenizer_costs(metrics, train_seconds=4.0, train_cpu_seconds=3.0, users=500, steps=10, batch="8 user-days")
    assert c["utilization_per_level"] == [0.5, 0.25] and c["collision_rate"] == pytest.approx(0.2)
    assert c["train_seconds_per_1k_users"] == pytest.approx(8.0) and c["train_cpu_seconds_per_1k_users"] == pytest.approx(6.0)
    variant = {"costs": {"foundv2": {**c, "bytes_per_user_day": 40.0, "inference_cpu_per_1k_documents": 2.0},
                         "u2qt": {**c, "bytes_per_user_day": 50.0, "inference_cpu_per_1k_documents": 5.0},
                         "continuous": {"bytes_per_user_day": 4000.0, "inference_cpu_per_1k_documents": 1.9}}}
    rep = {"label": "r", "avg_auc": 0.7, "avg_ks": 0.3, "avg_auc_ci": [0.6, 0.8],
           "tasks": {"a": {"auc": 0.7, "ks": 0.3, "auc_ci": [0.6, 0.8]}}}
    text = "\n".join(side_by_side(variant, {"u2qt_bag": rep, "tokens_bag": rep}, ["a"]))
    assert "continuous / FOUNDv2 tokens **100.00x**" in text and "continuous / U²QT tokens **80.00x**" in text
    assert "U²QT-AAAI tokens: bag of codes" in text and "0.7000 [0.600, 0.800] / 0.300" in text
    assert "0.50, 0.25" in text and "| 6.0 (8.0) |" in text and "U²QT takes **2.50x** FOUNDv2's CPU time per document" in text
