"""An alert hook for the DAG tests (``airflow.alert_callback: tests.dags.alerts:record``): it
appends one JSON line per failed task to ``$U2QT_TEST_ALERTS``."""
from __future__ import annotations

import json
import os


def record(context: dict) -> None:
    ti = context["task_instance"]
    with open(os.environ["U2QT_TEST_ALERTS"], "a") as out:
        out.write(json.dumps({"task_id": ti.task_id, "try_number": ti.try_number, "ds": context.get("ds"),
                              "exception": str(context.get("exception"))}) + "\n")
