"""Dates as the pipeline takes them: ``YYYY-MM-DD`` strings checked before Spark starts."""
from __future__ import annotations

import re
from datetime import date, timedelta

from u2qt_core.errors import InputError

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def iso_date(text: str, what: str = "date") -> date:
    """``YYYY-MM-DD`` -> date; anything else (``20260108``, which Python would accept, or
    ``2026-02-30``) is an :class:`InputError` naming ``what`` and the value, before Spark sees it."""
    value = str(text).strip()
    if not _ISO_DATE.match(value):
        raise InputError(f"{what} {text!r} is not a date in YYYY-MM-DD form")
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise InputError(f"{what} {text!r} is not a calendar date (YYYY-MM-DD): {exc}") from None


def date_range(start: str, end: str) -> list[str]:
    """Every ISO date from ``start`` to ``end`` inclusive; an :class:`InputError` naming both when
    ``end`` is earlier."""
    first, last = iso_date(start, "start date"), iso_date(end, "end date")
    if last < first:
        raise InputError(f"end date {end} is before start date {start}")
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
