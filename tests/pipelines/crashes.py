"""Simulated crashes inside publish: a function of ``pipelines.daily_job`` that raises once."""
from __future__ import annotations


def crash_once(monkeypatch, target: str, after_call: bool = False) -> None:
    """Make ``pipelines.daily_job.<target>`` raise once (before or after doing its write)."""
    import pipelines.daily_job as daily_job

    real = getattr(daily_job, target)
    state = {"crashed": False}

    def crashing(*args, **kwargs):
        if state["crashed"]:
            return real(*args, **kwargs)
        state["crashed"] = True
        if after_call:
            real(*args, **kwargs)
        raise RuntimeError(f"simulated crash {'after' if after_call else 'before'} {target}")

    monkeypatch.setattr(daily_job, target, crashing)
