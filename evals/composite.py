"""Composite scores: the unweighted mean of chosen suites' (or aggregates') scores, as the paper's "general
average" over its benchmarks. Each part counts once whatever its size, unlike the pooled aggregates.

The interval treats the parts as independent: each part's 95% interval gives its standard error
((hi - lo) / 3.92), and the mean's standard error is sqrt(Σ se²) / K. Pure functions, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from evals.errors import SuiteError
from evals.stats import Z95 as _Z
from evals.stats import Score


def composite_score(parts: Sequence[Score]) -> Score:
    """Mean of `parts` with an interval from theirs; n is the total item count behind it."""
    if not parts:
        raise SuiteError("a composite needs at least one score")
    k = len(parts)
    mean = sum(p.value for p in parts) / k
    se = math.sqrt(sum(((p.hi - p.lo) / (2 * _Z)) ** 2 for p in parts)) / k
    return Score(value=mean, n=sum(p.n for p in parts), lo=mean - _Z * se, hi=mean + _Z * se)


def parse_composite(text: str) -> tuple[str, list[str]]:
    """`NAME=SUITE,SUITE,...` (the CLI's --composite) -> (name, members). Raises SuiteError naming the text."""
    from evals.lm_eval_suite import join_option_parts

    name, sep, rest = text.partition("=")
    members = join_option_parts([m.strip() for m in rest.split(",") if m.strip()])
    if not sep or not name.strip() or not members:
        raise SuiteError(f"--composite {text!r}: expected NAME=SUITE,SUITE,... (suite names or aggregates)")
    return name.strip(), members


def composite_from_dicts(parts: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """composite_score over stored score dicts ({"value","n","lo","hi"}), as a dict again: for rows re-read from
    the store, where a composite may be defined after the sweep ran."""
    return composite_score([Score.from_dict(p) for p in parts]).to_dict()
