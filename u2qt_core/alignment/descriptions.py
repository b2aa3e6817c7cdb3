"""Template function F of FOUNDv2 eq. 13: future behaviour -> natural-language description.

The paper's bill template is ``"The user purchased {items} amounting more than {num} dollars with
{status} payment."`` (:data:`PAPER_TEMPLATE`); a dataset brings templates of the same shape for its
own sources (the synthetic world's are in :mod:`pipelines.world.descriptions`). The descriptions
are embedded by a (optionally LoRA-tuned) text encoder for the semantic-level alignment (eq. 14).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from u2qt_core.errors import InputError

__all__ = ["PAPER_TEMPLATE", "describe_future_behaviour", "describe", "round_down_amount"]

#: The paper's template (eq. 13); ``{items}`` is a comma-joined list, ``{num}`` a rounded-down
#: amount or count, ``{status}`` a qualifier.
PAPER_TEMPLATE = "The user purchased {items} amounting more than {num} dollars with {status} payment."


def round_down_amount(value: float) -> int:
    """Round down to one significant digit (437.2 -> 400, 52 -> 50, 7.9 -> 7, <1 -> 0), so the
    description states a coarse "more than" bucket rather than an exact figure."""
    if not math.isfinite(value):
        raise InputError(f"amount must be finite, got {value}")
    if value < 1:
        return 0
    magnitude = 10 ** int(math.floor(math.log10(value)))
    return int(value // magnitude) * magnitude


def _join_items(items: Sequence[str] | str) -> str:
    if isinstance(items, str):
        items = [items]
    items = [str(i).strip() for i in items if str(i).strip()]
    if not items:
        raise InputError("a behaviour description needs at least one item")
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def describe(template: str, items: Sequence[str] | str, amount: float, status: str) -> str:
    """Fill ``template`` (with ``{items}``, ``{num}`` and ``{status}`` fields).

    Args:
        template: e.g. :data:`PAPER_TEMPLATE`, or a dataset's template for one of its sources.
        items: purchased items / pages / apps / queries (most relevant first).
        amount: money spent (bill) or event count (other sources); stated rounded down.
        status: payment status or activity qualifier (e.g. "successful", "frequent").
    """
    try:
        return template.format(items=_join_items(items), num=round_down_amount(float(amount)), status=status.strip())
    except (KeyError, IndexError) as exc:
        raise InputError(f"description template {template!r}: unknown field {exc}; use {{items}}, {{num}}, {{status}}") from None


def describe_future_behaviour(items: Sequence[str] | str, amount: float, status: str) -> str:
    """The paper's template (eq. 13, bill source): ``F(B_{i,t2}, S_{i,t2}, M_{i,t2})``.

    >>> describe_future_behaviour(["coffee", "a train ticket"], 437.5, "successful")
    'The user purchased coffee and a train ticket amounting more than 400 dollars with successful payment.'
    """
    return describe(PAPER_TEMPLATE, items, amount, status)
