"""arcee_fusion — Arcee Fusion: take the other model's delta only where it matters most.

importance = |θ − base| · KL(softmax(θ) ‖ softmax(base)), the KL divergence taken along each row (last dim);
the entries at or above median + 1.5·IQR of the importance (Tukey's outlier fence) take the other model's value,
the rest keep the base's. mergekit 0.1.5 estimates the quartiles from 1M entries drawn at random (unseeded) for
tensors larger than that; we use the exact quartiles always (deterministic; equal to mergekit's up to 1M).
Rows are independent until the quartiles: the streamed form finds them exactly with the radix select (`TopK`)
in two counting passes, then merges chunk by chunk.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from engine.methods import MergeMethod, ReadChunks
from engine.methods._common import need
from engine.methods._task_vectors import TopK

QUARTILES = (0.25, 0.5, 0.75)


def importance(other: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    eps = 1e-8
    p = F.softmax(other, dim=-1) + eps
    q = F.softmax(base, dim=-1) + eps
    return (other - base).abs() * torch.sum(p * torch.log(p / q), dim=-1, keepdim=True)


def _positions(numel: int) -> list[int]:
    """Ascending ranks of the quartiles, computed as mergekit does (float32 q·(n − 1), truncated)."""
    return [int(i) for i in (torch.tensor(QUARTILES) * (numel - 1)).long()]


def _fence(q1: torch.Tensor, median: torch.Tensor, q3: torch.Tensor) -> torch.Tensor:
    return median + 1.5 * (q3 - q1)


def _fuse(base: torch.Tensor, other: torch.Tensor, score: torch.Tensor, fence: torch.Tensor) -> torch.Tensor:
    return base + (other - base) * (score >= fence).float()


def merge(
    base: torch.Tensor | None,
    tensors: list[torch.Tensor],
    model_params: list[dict[str, Any]],
    params: dict[str, Any],
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    need("arcee_fusion", base, tensors, base_required=True, count=1)
    score = importance(tensors[0], base)
    ordered = torch.sort(score.reshape(-1)).values
    fence = _fence(*ordered[_positions(ordered.numel())])
    return _fuse(base, tensors[0], score, fence)


def stream(
    read_chunks: ReadChunks,
    numel: int,
    model_params: list[dict[str, Any]],
    params: dict[str, Any],
    generator: torch.Generator | None = None,
) -> Iterator[torch.Tensor]:
    """The ascending rank j is the (n − j)-th largest: one `TopK` per quartile. The importance is a product of
    non-negatives (a KL divergence rounded below zero would be ranked by its magnitude: a difference of order
    1e-8·|delta| at most)."""
    selectors = [TopK(numel, k=numel - j) for j in _positions(numel)]
    smallest = torch.tensor(float("inf"))
    for feed, settle in (("feed_high", "settle_high"), ("feed_low", "settle_low")):
        for base, tensors in read_chunks():
            need("arcee_fusion", base, tensors, base_required=True, count=1)
            score = importance(tensors[0], base)
            smallest = torch.minimum(smallest, score.min().float().cpu())
            for selector in selectors:
                if not selector.trivial:
                    getattr(selector, feed)(score)
        for selector in selectors:
            if not selector.trivial:
                getattr(selector, settle)()
    # The k-th largest's float32 bit pattern; rank 0 (k = n) is the minimum, which TopK does not count.
    values = [
        smallest if s.all else torch.tensor(s.threshold, dtype=torch.int32).view(torch.float32) for s in selectors
    ]
    for base, tensors in read_chunks():
        fence = _fence(*(v.to(base.dtype) for v in values))
        yield _fuse(base, tensors[0], importance(tensors[0], base), fence)


METHOD = MergeMethod(
    name="arcee_fusion",
    fn=merge,
    requires_base=True,
    inputs=(1, 1),
    stream=stream,
)
