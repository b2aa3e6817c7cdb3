"""One finding of ``u2qt check-inputs``: its severity, where it is and what it says."""
from __future__ import annotations

from typing import Literal, NamedTuple

Severity = Literal["error", "warning", "note"]


class Difference(NamedTuple):
    """One line of ``u2qt check-inputs``: ``error`` (the night cannot run), ``warning`` (rows it
    would quarantine or lose) or ``note``."""

    severity: Severity
    where: str        # "raw_events", "raw_events.source", "user_profile.age"
    message: str

    def line(self) -> str:
        return f"{self.severity}: {self.where}: {self.message}"
