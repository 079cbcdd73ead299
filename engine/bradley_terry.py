"""Bradley–Terry strengths from pairwise votes (pure functions, no I/O).

P(i beats j) = p_i / (p_i + p_j). Strengths are fitted by the minorise–maximise iteration of Hunter (2004) on win
counts; a tie (and a "both bad" vote, which prefers neither) counts half a win to each side. One virtual tie per
compared pair keeps every strength finite when a variant won or lost all its votes. Reported on the log scale,
centred on the mean (0 = average), with a percentile bootstrap interval over the votes.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

WIN_A, WIN_B, TIE, BOTH_BAD = "A", "B", "tie", "both_bad"
VERDICTS = (WIN_A, WIN_B, TIE, BOTH_BAD)


@dataclass(frozen=True)
class Strength:
    name: str
    value: float  # log strength, mean 0 over the compared variants
    lo: float
    hi: float
    votes: int


def _wins(votes: Sequence[tuple[str, str, str]], names: list[str]) -> list[list[float]]:
    index = {n: i for i, n in enumerate(names)}
    wins = [[0.0] * len(names) for _ in names]
    for a, b, verdict in votes:
        i, j = index[a], index[b]
        if verdict == WIN_A:
            wins[i][j] += 1
        elif verdict == WIN_B:
            wins[j][i] += 1
        else:
            wins[i][j] += 0.5
            wins[j][i] += 0.5
    for i in range(len(names)):  # the virtual tie per compared pair
        for j in range(i + 1, len(names)):
            if wins[i][j] + wins[j][i] > 0:
                wins[i][j] += 0.5
                wins[j][i] += 0.5
    return wins


def fit(
    votes: Sequence[tuple[str, str, str]], names: Sequence[str], *, iters: int = 500, tol: float = 1e-10
) -> list[float]:
    """Log strengths (mean 0) of `names` from `(a, b, verdict)` votes; a name without votes gets 0."""
    names = list(names)
    wins = _wins(votes, names)
    n = len(names)
    games = [[wins[i][j] + wins[j][i] for j in range(n)] for i in range(n)]
    p = [1.0] * n
    for _ in range(iters):
        new = []
        for i in range(n):
            total = sum(wins[i])
            denom = sum(games[i][j] / (p[i] + p[j]) for j in range(n) if j != i and games[i][j])
            new.append(total / denom if denom else p[i])
        # Fix the scale (BT strengths are defined up to a factor): geometric mean 1.
        g = math.exp(sum(math.log(x) for x in new) / n) if n else 1.0
        new = [x / g for x in new]
        done = max((abs(a - b) for a, b in zip(new, p, strict=True)), default=0.0) < tol
        p = new
        if done:
            break
    return [math.log(x) for x in p]


def strengths(
    votes: Sequence[tuple[str, str, str]],
    names: Sequence[str] | None = None,
    *,
    resamples: int = 200,
    seed: int = 0,
    level: float = 0.95,
) -> list[Strength]:
    """A `Strength` per variant with a percentile-bootstrap interval (votes resampled with replacement)."""
    for a, b, verdict in votes:
        if verdict not in VERDICTS:
            raise ValueError(f"vote {a!r} vs {b!r}: unknown verdict {verdict!r} (expected one of {VERDICTS})")
    names = list(names) if names is not None else list(dict.fromkeys(x for a, b, _ in votes for x in (a, b)))
    point = fit(votes, names)
    rng = random.Random(seed)
    samples: list[list[float]] = [[] for _ in names]
    if votes:
        for _ in range(resamples):
            draw = [votes[rng.randrange(len(votes))] for _ in votes]
            for i, v in enumerate(fit(draw, names, iters=200, tol=1e-8)):
                samples[i].append(v)
    counts = {n: sum(1 for a, b, _ in votes if n in (a, b)) for n in names}
    out = []
    tail = (1 - level) / 2
    for i, name in enumerate(names):
        s = sorted(samples[i])
        lo = s[int(tail * (len(s) - 1))] if s else point[i]
        hi = s[int(math.ceil((1 - tail) * (len(s) - 1)))] if s else point[i]
        out.append(Strength(name, point[i], min(lo, point[i]), max(hi, point[i]), counts[name]))
    return out
