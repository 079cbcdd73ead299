"""sce — SCE (arXiv 2408.07990): Select the entries where the models' deltas vary most (top `select_topk` of
the nonzero variances), Calculate per-model weights from the deltas' mean square, Erase the deltas whose sign
disagrees with the weighted-sum election, and average the rest with those weights.

Whole-tensor figures (the variance top-k, the mean squares) make the streamed form multi-pass: two counting passes
settle the variance threshold exactly (`TopK`), the second summing each model's squares over the selection too;
the last merges.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from engine.methods import MergeMethod, ReadChunks
from engine.methods._common import chunk_stats, need
from engine.methods._task_vectors import TopK, sign_consensus


def _deltas(base: torch.Tensor, tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([t - base for t in tensors])


def _variance(deltas: torch.Tensor) -> torch.Tensor:
    return torch.var(deltas, dim=0, unbiased=False)


def _weights(mean_squares: torch.Tensor) -> torch.Tensor:
    """Each model's share of the summed mean squares; equal shares when they are all ~0."""
    total = float(mean_squares.sum())
    if abs(total) < 1e-6:
        return torch.ones_like(mean_squares) / len(mean_squares)
    return mean_squares / total


def _combine(base: torch.Tensor, deltas: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    keep = sign_consensus(deltas)
    erased = weights.to(deltas.dtype).view(-1, *([1] * base.dim())) * keep
    return base + (deltas * erased).sum(dim=0) / erased.sum(dim=0).clamp(min=1e-6)


def _count(nonzero: torch.Tensor, density: float) -> int:
    """mergekit's k: int(density · the number of nonzero variances), the product taken as a float32 tensor."""
    return int(nonzero * density)


def _top_variance(variance: torch.Tensor, density: float) -> torch.Tensor:
    """Whole-tensor mask of the top variances with mergekit's own `topk` call (so equal variances, common in
    half precision, are chosen as mergekit chooses them)."""
    mask = torch.zeros_like(variance)
    k = _count(torch.count_nonzero(variance), density) if density > 0 else 0
    if k > 0:
        mask.view(-1)[torch.topk(variance.abs().view(-1), k=k, largest=True).indices] = 1
    return mask


def merge(
    base: torch.Tensor | None,
    tensors: list[torch.Tensor],
    model_params: list[dict[str, Any]],
    params: dict[str, Any],
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    need("sce", base, tensors, base_required=True, at_least=0)
    if not tensors:
        return base
    deltas = _deltas(base, tensors)
    density = float(params["select_topk"])
    if density < 1:
        variance = _variance(deltas)
        deltas = deltas * _top_variance(variance, density)
    mean_squares = deltas.square().reshape(len(deltas), -1).mean(dim=1)
    return _combine(base, deltas, _weights(mean_squares))


# How many entries of the threshold's bucket the second counting pass keeps aside (index order, low bits and
# squared deltas) to settle the weights without a pass of their own; beyond it, the weights take their pass.
EDGE_ENTRIES = 1 << 20


class _Squares:
    """Each model's squared deltas summed over the selection, gathered during the second counting pass: the
    entries above the threshold's bucket are selected whatever the threshold, and those inside it are kept aside
    until it is settled (the ones equal to it are selected first in index order, as `TopK.mask` selects them)."""

    def __init__(self, selector: TopK) -> None:
        self.selector = selector
        self.above: torch.Tensor | None = None
        self.low: list[torch.Tensor] = []
        self.squares: list[torch.Tensor] = []
        self.kept = 0

    def feed(self, variance: torch.Tensor, deltas: torch.Tensor) -> None:
        bits = TopK.bits(variance)
        high = bits >> 16
        squares = deltas.double().square().reshape(len(deltas), -1)
        above = torch.where(high > self.selector.bucket, squares, 0).sum(dim=1).cpu()
        self.above = above if self.above is None else self.above + above
        if self.kept > EDGE_ENTRIES:
            return
        edge = high == self.selector.bucket
        self.low.append((bits[edge] & 0xFFFF).cpu())
        self.squares.append(squares[:, edge].cpu())
        self.kept += len(self.low[-1])

    def total(self) -> torch.Tensor | None:
        """After `settle_low`: the summed squares per model (None when too many entries shared the bucket)."""
        if self.kept > EDGE_ENTRIES or self.above is None:
            return None
        low, squares = torch.cat(self.low), torch.cat(self.squares, dim=1)
        threshold = self.selector.threshold & 0xFFFF
        ties = (low == threshold).nonzero().flatten()[: self.selector.ties_settled]
        return self.above + squares[:, low > threshold].sum(dim=1) + squares[:, ties].sum(dim=1)


def stream(
    read_chunks: ReadChunks,
    numel: int,
    model_params: list[dict[str, Any]],
    params: dict[str, Any],
    generator: torch.Generator | None = None,
) -> Iterator[torch.Tensor]:
    """Pass 1 counts the variances' high bits (and the nonzero ones, for k), pass 2 their low bits within the
    threshold's bucket and, with them, each model's squared deltas over the selection (so the weights need no pass
    of their own), pass 3 merges."""
    density = float(params["select_topk"])
    selector = None
    squares = None
    if 0 < density < 1:
        selector = TopK(numel, k=numel)  # k is set once the nonzero variances are counted
        nonzero = 0
        for base, tensors in read_chunks():
            variance = _variance(_deltas(base, tensors))
            nonzero += int(torch.count_nonzero(variance))
            selector.feed_high(variance)
        selector.set_count(_count(torch.tensor(nonzero), density))
        if not selector.trivial:
            selector.settle_high()
            gathered = _Squares(selector)
            for base, tensors in read_chunks():
                deltas = _deltas(base, tensors)
                variance = _variance(deltas)
                selector.feed_low(variance)
                gathered.feed(variance, deltas)
            selector.settle_low()
            squares = gathered.total()

    def selected() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if selector is not None:
            selector.rewind()
        for base, tensors in read_chunks():
            deltas = _deltas(base, tensors)
            if density < 1:
                deltas = deltas * (selector.mask(_variance(deltas)) if selector else 0)
            yield base, deltas

    if squares is None:
        squares = chunk_stats(
            selected, lambda base, deltas: deltas.double().square().reshape(len(deltas), -1).sum(dim=1).cpu()
        )
    weights = _weights(squares / numel)
    for base, deltas in selected():
        yield _combine(base, deltas, weights)


METHOD = MergeMethod(
    name="sce",
    fn=merge,
    requires_base=True,
    global_params={"int8_mask": False, "select_topk": 1.0},
    inputs=(0, None),
    stream=stream,
)
