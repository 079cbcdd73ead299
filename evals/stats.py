"""Binomial scores with Wilson 95% intervals (pure functions, no I/O)."""

from __future__ import annotations

import math
from dataclasses import dataclass

# Two-sided 95% normal quantile, written out so the interval is reproducible by hand.
Z95 = 1.959963984540054


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n Bernoulli trials.

    Chosen over the normal (Wald) interval because the demo suites are small and scores sit near 0 or 1,
    where Wald collapses to a zero-width interval; Wilson stays inside [0, 1] and keeps its coverage.
    """
    if n <= 0:
        raise ValueError(f"wilson_interval needs n > 0, got n={n}")
    if not 0 <= k <= n:
        raise ValueError(f"wilson_interval needs 0 <= k <= n, got k={k}, n={n}")
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = (z / denom) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # Clamp tiny float excursions at the ends (k == 0 or k == n give exactly 0 / 1 in exact arithmetic).
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Score:
    """A proportion with its item count and Wilson 95% interval."""

    value: float
    n: int
    lo: float
    hi: float

    @classmethod
    def from_counts(cls, k: int, n: int) -> Score:
        lo, hi = wilson_interval(k, n)
        return cls(value=k / n, n=n, lo=lo, hi=hi)

    @property
    def k(self) -> int:
        """Number of successes (recovered exactly: value was k / n)."""
        return round(self.value * self.n)

    def to_dict(self) -> dict[str, float | int]:
        return {"value": self.value, "n": self.n, "lo": self.lo, "hi": self.hi}

    @classmethod
    def from_dict(cls, d: dict) -> Score:
        return cls(value=float(d["value"]), n=int(d["n"]), lo=float(d["lo"]), hi=float(d["hi"]))

    def format(self, digits: int = 1) -> str:
        """e.g. '62.5% [51.3, 72.6] n=80'."""
        return f"{100 * self.value:.{digits}f}% [{100 * self.lo:.{digits}f}, {100 * self.hi:.{digits}f}] n={self.n}"
