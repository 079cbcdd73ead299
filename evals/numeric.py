"""Numeric answer extraction for GSM8K-style suites (pure functions).

Rules, as the standard harnesses apply them: the number after the last `####`, else after the last
"the answer is" / "final answer:", else the last number anywhere in the reply. A number may carry a sign,
thousands commas, a `$` or a trailing `%`/`.`; it is returned canonical: no commas, no trailing zeros after
a decimal point ("1,000.00" -> "1000", "-3.50" -> "-3.5").
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_NUMBER = r"-?\$?\s?\d[\d,]*(?:\.\d+)?|-?\$?\s?\.\d+"
_NUMBER_RE = re.compile(_NUMBER)
_MARKERS = (
    re.compile(rf"####\s*(?:\$\s*)?({_NUMBER})"),
    re.compile(
        rf"(?:the )?(?:final )?answer(?: is|:)\s*(?:\*\*|\$|\\boxed\{{|:|\s)*({_NUMBER})", re.IGNORECASE
    ),
)


def canonical_number(token: str) -> str | None:
    """'$1,234.50' -> '1234.5'; None when `token` is no number."""
    t = token.replace("$", "").replace(",", "").replace(" ", "").rstrip(".")
    try:
        d = Decimal(t)
    except InvalidOperation:
        return None
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


def extract_number(text: str) -> str | None:
    """The reply's answer as a canonical number string, or None when it has no number."""
    for marker in _MARKERS:
        found = marker.findall(text)
        if found:
            return canonical_number(found[-1])
    numbers = _NUMBER_RE.findall(text)
    return canonical_number(numbers[-1]) if numbers else None


def numbers_equal(a: str, b: str) -> bool:
    """Equal as numbers ("18" == "18.0"); False when either is not a number."""
    try:
        return Decimal(a) == Decimal(b)
    except InvalidOperation:
        return False
