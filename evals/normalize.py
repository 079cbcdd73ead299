"""Answer normalisation for exact-match and contains scoring (SQuAD / lm-eval style, our own rules).

Lower-case, Unicode NFKC, drop articles (a, an, the), turn punctuation into spaces, collapse whitespace —
but keep what changes a number's meaning: a decimal point between digits ("3.5" != "35") and a leading minus
("-5" != "5"); thousands separators are dropped ("1,000" == "1000"). Apostrophes are deleted rather than
spaced so "don't" and "dont" agree.
"""

from __future__ import annotations

import re
import unicodedata

_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_APOSTROPHES = "'\u2019\u2018\u02bc`"


def normalize_answer(text: str) -> str:
    t = unicodedata.normalize("NFKC", text).lower()
    t = _THOUSANDS.sub("", t)
    out: list[str] = []
    n = len(t)
    for i, c in enumerate(t):
        prev = t[i - 1] if i > 0 else " "
        nxt = t[i + 1] if i + 1 < n else " "
        if c.isalnum():
            out.append(c)
        elif c in _APOSTROPHES:
            continue
        elif c == "." and prev.isdigit() and nxt.isdigit():
            out.append(c)
        elif c in "-\u2212" and nxt.isdigit() and not prev.isalnum():
            out.append("-")
        else:
            out.append(" ")
    t = _ARTICLES.sub(" ", "".join(out))
    return " ".join(t.split())


def tokens(text: str) -> list[str]:
    return normalize_answer(text).split()


def contains_tokens(haystack: list[str], needle: list[str]) -> bool:
    """True if `needle` occurs as a contiguous run of whole tokens in `haystack` ("4" is not in "42")."""
    if not needle:
        return False
    m = len(needle)
    return any(haystack[i : i + m] == needle for i in range(len(haystack) - m + 1))
