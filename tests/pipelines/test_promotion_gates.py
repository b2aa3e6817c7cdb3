"""The probe gate of ``u2qt evaluate`` decides only what its held-out set can decide."""
from __future__ import annotations

from pipelines.tokenizer.promotion_gates import probe_gate


def test_the_probe_gate_fails_only_when_its_whole_interval_is_below_the_bar():
    small = probe_gate(0.45, [0.30, 0.62], 0.55, 40)
    assert small["passed"] and small["skipped"].startswith("held-out set too small to decide: AUC 0.450")
    below = probe_gate(0.42, [0.35, 0.50], 0.55, 400)
    assert not below["passed"] and "skipped" not in below and below["auc_ci"] == [0.35, 0.50]
    above = probe_gate(0.70, [0.60, 0.80], 0.55, 400)
    assert above["passed"] and "skipped" not in above
    assert not probe_gate(0.50, None, 0.55, 10)["passed"]     # no interval: the AUC alone decides
    assert probe_gate(0.55, None, 0.55, 10)["passed"]
