"""The synthetic world's future-behaviour descriptions (FOUNDv2 eq. 13) for ``u2qt paper-eval``'s
semantic alignment: a template per world source, and how an item is read back from the
generator's event sentences (:mod:`pipelines.world.generator`). The world owns both, so no other
package needs to know its source names or sentence formats."""
from __future__ import annotations

import re

from u2qt_core.alignment.descriptions import PAPER_TEMPLATE

#: Template per world source, of the paper's shape (its bill template is the paper's own).
TEMPLATES: dict[str, str] = {
    "bill": PAPER_TEMPLATE,
    "spm": "The user clicked through {items} more than {num} times in the {status} session.",
    "mini": "The user opened the mini-programs {items} more than {num} times with {status} use.",
    "app": "The user used the apps {items} more than {num} times with {status} activity.",
    "search": "The user searched for {items} more than {num} times with {status} intent.",
}
#: the source whose amount is money (the others count events)
MONEY_SOURCE = "bill"

_PREFIXES = re.compile(r"^(Alipay home > |Opened mini-program |Used app |search: )")


def item_of(source: str, text: str) -> str:
    """The item an event sentence names (a merchant, page, mini-program, app or query)."""
    if source == MONEY_SOURCE:
        match = re.search(r"for (.+?) at ", text) or re.search(r"to (.+?) \(", text)
        return match.group(1) if match else text[:60]
    return _PREFIXES.sub("", text)[:60]
