"""Documents of one day (pipelines/night/documents.py): counts only on lines that repeat, most frequent
first, and what the ``document.max_lines`` cap leaves out is counted, not dropped silently."""
from __future__ import annotations

import datetime as dt

from pipelines.night.documents import build_documents, document_cuts
from pipelines.lake.schemas import RAW_EVENTS_SCHEMA
from pipelines.config.settings import load_sources

DAY = dt.date(2026, 1, 5)


def _event(user_id: int, minute: int, source: str, text: str) -> tuple:
    return (user_id, dt.datetime.combine(DAY, dt.time(9, minute)), DAY, source, text, None, None)


def test_counts_only_where_lines_repeat_and_cuts_are_counted(spark):
    base = load_sources()
    sources = base.model_copy(update={"document": base.document.model_copy(update={"max_lines": 2})})
    events = spark.createDataFrame([
        _event(1, 0, "bill", "Paid 8.00 for tea"),
        _event(1, 1, "bill", "Paid 32.50 for rice"),
        _event(1, 2, "bill", "Paid 32.50 for rice"),
        _event(1, 3, "bill", "Paid 3.00 for a bus"),      # third distinct line: over the cap of 2
        _event(1, 4, "search", "cheap flights"),
        _event(2, 0, "search", "cheap flights"),
        _event(2, 1, "search", "cheap flights"),
    ], RAW_EVENTS_SCHEMA)
    docs = {(r["user_id"], r["source"]): r["document"] for r in build_documents(events, sources).collect()}
    assert docs == {
        (1, "bill"): "PayBill: Paid 32.50 for rice, 2x [*] Paid 8.00 for tea",
        (1, "search"): "Search queries: cheap flights",
        (2, "search"): "Search queries: cheap flights, 2x",
    }
    assert document_cuts(events, sources) == {str(DAY): {"documents_cut": 1, "lines_cut": 1,
                                                         "cuts_by_source": {"bill": {"documents_cut": 1, "lines_cut": 1}}}}
    every_line = base.model_copy(update={"document": base.document.model_copy(update={"count_single_lines": True})})
    docs = {(r["user_id"], r["source"]): r["document"] for r in build_documents(events, every_line).collect()}
    assert docs[(1, "search")] == "Search queries: cheap flights, 1x"
    assert document_cuts(events, base) == {}
