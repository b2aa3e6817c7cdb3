"""The report's pieces that need no Spark: events read from the nights' records, and a figure
drawing its series, thresholds and events with findable ids."""
from __future__ import annotations

from pipelines.ops.night_report import figure_svg, night_events, series


def test_events_mark_version_changes_and_retraining():
    nights = {"2026-01-05": {"version": "u2qt-a", "drift": {"_status": "ok"}},
              "2026-01-06": {"version": "u2qt-a", "drift": {"_status": "retrain_due"}},
              "2026-01-07": {"version": "u2qt-b"}}
    assert night_events(nights) == [
        {"kind": "retrain_due", "date": "2026-01-06", "label": "u2qt-a due for retraining"},
        {"kind": "promotion", "date": "2026-01-07", "label": "tokenizer u2qt-b"}]


def test_series_and_figure():
    nights = {"2026-01-05": {"quality": {"rows_per_source": {"a": 3, "b": 4}, "quarantine_rate": 0.0, "collision_rate": 0.1}}}
    rows = [{"source": "a", "event_date": "2026-01-05", "level": lv, "utilization": 0.5, "psi": 0.1 * lv, "js": 0.01,
             "residual_mean": 0.3, "train_residual_mean": 0.2} for lv in (1, 2)]
    data = series(nights, rows)
    assert data["active_users"] == {"a": {"2026-01-05": 3}, "b": {"2026-01-05": 4}}
    assert abs(data["psi"]["a"]["2026-01-05"] - 0.2) < 1e-12 and abs(data["residual_ratio"]["a"]["2026-01-05"] - 1.5) < 1e-12
    svg = figure_svg("psi", "PSI", ["2026-01-05", "2026-01-06"], data["psi"], [("drift.warn_psi", 0.1)],
                     [{"kind": "promotion", "date": "2026-01-06", "label": "x"}])
    assert svg.startswith("<svg") and 'id="series-a"' in svg
    assert 'id="threshold-drift.warn_psi"' in svg and 'id="event-promotion-2026-01-06"' in svg
