"""Template function F of FOUNDv2 eq. 13: future behaviour -> natural-language description.

The paper's bill template is ``"The user purchased {items} amounting more than {num} dollars with
{status} payment."``; the other sources get templates of the same shape. The descriptions are
embedded by a (optionally LoRA-tuned) text encoder for the semantic-level alignment (eq. 14).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from u2qt_core.errors import InputError

__all__ = ["DESCRIPTION_TEMPLATES", "describe_future_behaviour", "describe", "round_down_amount"]

#: Template per source; ``{items}`` is a comma-joined list, ``{num}`` a rounded-down amount/count.
DESCRIPTION_TEMPLATES: dict[str, str] = {
    "bill": "The user purchased {items} amounting more than {num} dollars with {status} payment.",
    "spm": "The user clicked through {items} more than {num} times in the {status} session.",
    "mini": "The user opened the mini-programs {items} more than {num} times with {status} use.",
    "app": "The user used the apps {items} more than {num} times with {status} activity.",
    "search": "The user searched for {items} more than {num} times with {status} intent.",
}


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


def describe(source: str, items: Sequence[str] | str, amount: float, status: str) -> str:
    """Fill ``DESCRIPTION_TEMPLATES[source]``.

    Args:
        source: a key of :data:`DESCRIPTION_TEMPLATES`.
        items: purchased items / pages / apps / queries (most relevant first).
        amount: money spent (bill) or event count (other sources); stated rounded down.
        status: payment status or activity qualifier (e.g. "successful", "frequent").
    """
    try:
        template = DESCRIPTION_TEMPLATES[source]
    except KeyError:
        raise InputError(f"no description template for source {source!r}; known: {sorted(DESCRIPTION_TEMPLATES)}") from None
    return template.format(items=_join_items(items), num=round_down_amount(float(amount)), status=status.strip())


def describe_future_behaviour(items: Sequence[str] | str, amount: float, status: str) -> str:
    """The paper's template (eq. 13, bill source): ``F(B_{i,t2}, S_{i,t2}, M_{i,t2})``.

    >>> describe_future_behaviour(["coffee", "a train ticket"], 437.5, "successful")
    'The user purchased coffee and a train ticket amounting more than 400 dollars with successful payment.'
    """
    return describe("bill", items, amount, status)
