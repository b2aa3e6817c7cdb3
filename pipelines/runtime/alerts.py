"""Alerts: the hook the DAGs call when a task fails and the night calls when its tokenizer
drifts. ``airflow.alert_callback`` names one (``"package.module:function"``); the default logs one
ERROR line."""
from __future__ import annotations

import importlib
import logging
from typing import Callable

from u2qt_core.errors import ConfigError

log = logging.getLogger("u2qt.alerts")

DEFAULT_ALERT = "pipelines.runtime.alerts:log_failure"


def log_failure(context: dict) -> None:
    """Default alert hook: one ERROR line naming the DAG, task, run, date and the exception."""
    ti = context.get("task_instance") or context.get("ti")
    log.error("u2qt alert: %s.%s failed (run %s, date %s, try %s): %s",
              getattr(ti, "dag_id", "?"), getattr(ti, "task_id", "?"), context.get("run_id"),
              context.get("ds"), getattr(ti, "try_number", "?"), context.get("exception"))


def resolve_callback(spec: str | None) -> Callable[[dict], None]:
    """``"package.module:function"`` (``airflow.alert_callback``) or :func:`log_failure`; a bad
    spec fails the DAG parse with the key named, not the first failure at night."""
    spec = spec or DEFAULT_ALERT
    module, _, name = spec.partition(":")
    try:
        hook = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"airflow.alert_callback: cannot import {spec!r} (want 'package.module:function'): {exc}") from exc
    if not callable(hook):
        raise ConfigError(f"airflow.alert_callback: {spec!r} is not callable")
    return hook
