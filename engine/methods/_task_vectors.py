"""Shared machinery of the task-vector methods (task_arithmetic, TIES, DARE, breadcrumbs, DELLA).

Each method is the same pipeline with different parts, as in mergekit 0.1.5's "generalized task arithmetic":
  delta_i = sparsify(θ_i − base)           (magnitude top-k, random drop, outlier trim, or DELLA's ranked drop)
  delta_i *= weight_i
  mask    = sign consensus over the deltas  (TIES-style methods only)
  mixed   = Σ delta_i·mask / (Σ weight_i·mask if normalize)  · λ
  out     = base + mixed
Rescaling after a drop matches the L1 norm of the delta before the drop (mergekit's choice, not 1/density).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import torch

from engine.methods import REQUIRED, MergeMethod, ReadChunks

Sparsifier = Callable[..., torch.Tensor]


class TopK:
    """Exact selection of the k largest |delta| entries, fed chunk by chunk, in O(n) without sorting.

    Non-negative float32 values order like their bit patterns read as int32, so the k-th largest magnitude is
    found by a two-level radix select: a histogram of the high 16 bits (pass 1) picks the bucket holding it, a
    histogram of the low 16 bits within that bucket (pass 2) pins it exactly. Pass 3 (`mask`) keeps everything
    above it and, of the entries equal to it, the first ones in index order until k are kept (a full sort, as in
    mergekit, breaks such ties arbitrarily; with continuous weights there are none). A whole tensor is simply
    one chunk."""

    def __init__(self, numel: int, density: float | None = None, *, k: int | None = None) -> None:
        if k is None:  # mergekit's count for a density: k = max(1, int(density·n))
            k = 0 if density is None or density <= 0 or numel == 0 else max(1, int(density * numel))
        self.numel = numel
        self.set_count(k)
        self.high = torch.zeros(1 << 15, dtype=torch.int64)
        self.low = torch.zeros(1 << 16, dtype=torch.int64)
        self.bucket = -1
        self.threshold = -1
        self.ties_left = self.ties_settled = 0

    def set_count(self, k: int) -> None:
        """Set k; also after `feed_high` when k depends on figures of that same pass (SCE's nonzero count)."""
        self.k = max(0, min(self.numel, k))
        self.all = self.k >= self.numel

    @staticmethod
    def bits(delta: torch.Tensor) -> torch.Tensor:
        return delta.reshape(-1).abs().float().view(torch.int32)

    def feed_high(self, delta: torch.Tensor) -> None:
        self.high += torch.bincount(self.bits(delta) >> 16, minlength=1 << 15).cpu()

    def settle_high(self) -> None:
        above = torch.cumsum(self.high.flip(0), 0).flip(0)  # above[b] = count in buckets >= b
        self.bucket = int((above >= self.k).nonzero().max())
        self.above_bucket = int(above[self.bucket + 1]) if self.bucket + 1 < len(above) else 0

    def feed_low(self, delta: torch.Tensor) -> None:
        bits = self.bits(delta)
        inside = bits[(bits >> 16) == self.bucket] & 0xFFFF
        self.low += torch.bincount(inside, minlength=1 << 16).cpu()

    def settle_low(self) -> None:
        above = torch.cumsum(self.low.flip(0), 0).flip(0) + self.above_bucket
        low = int((above >= self.k).nonzero().max())
        self.threshold = (self.bucket << 16) | low
        strictly_above = int(above[low + 1]) if low + 1 < len(above) else self.above_bucket
        self.ties_left = self.ties_settled = self.k - strictly_above

    def rewind(self) -> None:
        """Ready `mask` for a new pass over the same chunks (ties are kept in index order, counted per pass)."""
        self.ties_left = self.ties_settled

    def mask(self, delta: torch.Tensor) -> torch.Tensor:
        """The keep-mask of the next chunk (chunks in order), shaped and typed like `delta`."""
        if self.all or self.k == 0:
            return (torch.ones_like if self.all else torch.zeros_like)(delta)
        bits = self.bits(delta)
        keep = bits > self.threshold
        if self.ties_left > 0:
            ties = (bits == self.threshold).nonzero().flatten()[: self.ties_left]
            keep[ties] = True
            self.ties_left -= len(ties)
        return keep.reshape(delta.shape).to(delta.dtype)

    @property
    def trivial(self) -> bool:
        """Keeps all or nothing: no counting pass needed."""
        return self.all or self.k == 0


class Band:
    """Exact selection of the entries whose magnitude rank (largest first) lies in [skip, skip + k): the top
    `skip + k` minus the top `skip`, two `TopK`s fed the same chunks. Ties at either edge are broken in index
    order by both, so the inner selection is a subset of the outer one."""

    def __init__(self, numel: int, skip: int, k: int) -> None:
        self.outer = TopK(numel, k=skip + k)
        self.inner = TopK(numel, k=skip)

    @property
    def trivial(self) -> bool:
        return self.outer.trivial and self.inner.trivial

    def feed_high(self, delta: torch.Tensor) -> None:
        self.outer.feed_high(delta)
        self.inner.feed_high(delta)

    def settle_high(self) -> None:
        for top in (self.outer, self.inner):
            if not top.trivial:
                top.settle_high()

    def feed_low(self, delta: torch.Tensor) -> None:
        for top in (self.outer, self.inner):
            if not top.trivial:
                top.feed_low(delta)

    def settle_low(self) -> None:
        for top in (self.outer, self.inner):
            if not top.trivial:
                top.settle_low()

    def mask(self, delta: torch.Tensor) -> torch.Tensor:
        return self.outer.mask(delta) - self.inner.mask(delta)

    def rewind(self) -> None:
        self.outer.rewind()
        self.inner.rewind()


class SortedRank:
    """The whole-tensor selection (one chunk), with mergekit's own sort call on the float32 magnitudes: the
    positions [start, start + k) of `torch.sort(|delta|, descending)`. Equal magnitudes (common in half
    precision) are then ordered exactly as mergekit's sort orders them, so the same entries are kept; the
    chunked `TopK`/`Band` break such ties in index order instead."""

    trivial = True  # no counting passes

    def __init__(self, numel: int, start: int, k: int, descending: bool) -> None:
        self.numel, self.start, self.k, self.descending = numel, start, k, descending

    def mask(self, delta: torch.Tensor) -> torch.Tensor:
        keep = torch.zeros(delta.numel(), dtype=delta.dtype, device=delta.device)
        if self.k > 0:
            magnitudes = delta.abs().reshape(-1).float()
            if self.descending:
                order = torch.argsort(magnitudes, descending=True)
            else:
                order = torch.sort(magnitudes, descending=False).indices
            keep[order[self.start : self.start + self.k]] = 1
        return keep.reshape(delta.shape)

    def rewind(self) -> None:
        pass


Selector = TopK | Band | SortedRank


def sorted_selector(make: Callable[..., Selector], numel: int, density: float, **extra: Any) -> SortedRank:
    """The one-chunk form of a rank selector, as mergekit sorts: top-k descending, the breadcrumbs band as the
    slice [smallest dropped, + kept) of the ascending order."""
    if make is largest_selector:
        return SortedRank(numel, 0, largest_selector(numel, density).k, descending=True)
    band = middle_selector(numel, density, **extra)
    keep, skip = band.outer.k - band.inner.k, band.inner.k
    return SortedRank(numel, numel - keep - skip, keep, descending=False)


def select_whole(selector: Selector, delta: torch.Tensor) -> torch.Tensor:
    """The keep-mask of one whole tensor: the counting passes and the mask in one go."""
    if not selector.trivial:
        selector.feed_high(delta)
        selector.settle_high()
        selector.feed_low(delta)
        selector.settle_low()
    return selector.mask(delta)


def largest_selector(numel: int, density: float, **_: Any) -> TopK:
    """The `density` fraction of entries with the largest magnitude: k = max(1, int(density·n)), as in mergekit."""
    return TopK(numel, density)


def middle_selector(numel: int, density: float, gamma: float = 0.01, **_: Any) -> Band:
    """Breadcrumbs: without the `gamma` fraction of largest-magnitude outliers and the smallest entries, keep
    int(density·n) (mergekit's counts: the outliers first, and the smallest dropped are what is left over)."""
    keep = int(density * numel)
    skip = numel - keep - max(0, numel - keep - int(gamma * numel))
    return Band(numel, skip, keep)


def keep_largest(delta: torch.Tensor, density: float, **_: Any) -> torch.Tensor:
    """TIES: mask keeping the top-`density` entries by magnitude."""
    return select_whole(largest_selector(delta.numel(), density), delta)


def keep_middle(delta: torch.Tensor, density: float, gamma: float = 0.01, **_: Any) -> torch.Tensor:
    """Breadcrumbs: drop the `gamma` fraction of largest-magnitude outliers, then the smallest, keeping `density`."""
    return select_whole(middle_selector(delta.numel(), density, gamma), delta)


# The sparsifiers that select by magnitude rank, and so can run over row chunks in counting passes.
RANK_SELECTORS: dict[Callable[..., torch.Tensor], Callable[..., Selector]] = {
    keep_largest: largest_selector,
    keep_middle: middle_selector,
}


def work_dtype(dtype: torch.dtype, device: torch.device | str) -> torch.dtype:
    """The dtype mergekit 0.1.5 draws and rescales DARE/DELLA masks in: the compute dtype, except on the CPU,
    where float16 and float64 deltas go through float32 (bfloat16 stays)."""
    if torch.device(device).type != "cpu" or dtype == torch.bfloat16:
        return dtype
    return torch.float32


def keep_random(delta: torch.Tensor, density: float, generator: torch.Generator | None = None, **_: Any):
    """DARE: keep each entry independently with probability `density`, as mergekit draws it: one Bernoulli draw
    per entry, in memory order, with `density` in the work dtype (`work_dtype`). The CPU draws serially, so
    row chunks drawn one after another from one generator get the whole tensor's mask."""
    p = torch.full(delta.shape, density, dtype=work_dtype(delta.dtype, delta.device), device=delta.device)
    return torch.bernoulli(p, generator=generator)


def keep_ranked(
    delta: torch.Tensor,
    density: float,
    epsilon: float = 0.15,
    generator: torch.Generator | None = None,
    **_: Any,
) -> torch.Tensor:
    """DELLA (MagPrune): keep probability rises linearly with magnitude rank within each row, from
    density − ε (smallest) to density + ε (largest); ranks, probabilities and draws as mergekit computes them
    (the ranks sorted in the compute dtype, the probabilities in the work dtype)."""
    if density <= 0:
        return torch.zeros_like(delta)
    if not (density - epsilon > 0 and density + epsilon < 1):
        raise ValueError(f"epsilon {epsilon} must keep density ± epsilon inside (0, 1) (density {density})")
    work = work_dtype(delta.dtype, delta.device)
    rows = delta if delta.dim() >= 2 else delta.unsqueeze(0)
    # mergekit's ranks are argsort(argsort(|delta|)): the second is the first's inverse permutation, a scatter.
    order = torch.argsort(rows.abs(), dim=1, descending=False)
    shape = (1, rows.shape[1], *[1] * (rows.dim() - 2))
    positions = torch.arange(rows.shape[1], device=rows.device).view(shape).expand_as(order)
    ranks = torch.empty_like(order).scatter_(1, order, positions).to(work) + 1
    lo = ranks.min(dim=1, keepdim=True).values
    hi = ranks.max(dim=1, keepdim=True).values
    position = ((ranks - lo) / (hi - lo)).clamp(0, 1)
    probs = (density - epsilon) + position * 2 * epsilon
    return torch.bernoulli(probs, generator=generator).reshape(delta.shape)


def draws(sparsifier: Sparsifier, density: float) -> bool:
    """Whether a random sparsifier draws for this density (mergekit returns early at density >= 1, and DELLA at
    density <= 0; DARE draws even at 0)."""
    return density < 1 and (sparsifier is keep_random or density > 0)


def advance(generator: torch.Generator, count: int, dtype: torch.dtype, device: torch.device | str) -> None:
    """Move `generator` past `count` Bernoulli draws with probabilities of `dtype` (the draws a skipped mask
    would have taken), in pieces of bounded memory. On the CPU a float32 uniform draw takes the generator's state
    exactly as far as a Bernoulli draw with float probabilities (one 32-bit word each) at a third of the cost."""
    cpu = torch.device(device).type == "cpu" and dtype != torch.float64
    piece = torch.empty((min(count, 1 << 20),), dtype=torch.float32 if cpu else dtype, device=device)
    if not cpu:
        piece.fill_(0.5)
    while count > 0:
        n = min(count, piece.numel())
        if cpu:
            piece[:n].uniform_(generator=generator)
        else:
            torch.bernoulli(piece[:n], generator=generator)
        count -= n


# Random drops: independent per entry (DARE) or per row (DELLA), so row chunks can draw their own masks.
RANDOM_SPARSIFIERS = (keep_random, keep_ranked)


def sign_consensus(weighted: torch.Tensor) -> torch.Tensor:
    """TIES 'sum' election: per entry, the sign of the summed weighted deltas (ties go positive); keep the
    deltas that agree with it."""
    majority = (weighted.sum(dim=0) >= 0).to(weighted.dtype) * 2 - 1
    return weighted.sign() == majority


def weighted_sum(
    base: torch.Tensor, tensors: list[torch.Tensor], weights: list[float], *, normalize: bool, lam: float
) -> torch.Tensor:
    """base + λ·Σ w_i(θ_i − base) [/ Σ w_i]: task arithmetic without sparsification or sign election.

    Computed as (1 − Σc_i)·base + Σ c_i·θ_i with c_i = λ·w_i [/ Σw]: one output buffer and one fused pass per
    input, no delta tensors (the rounding differs from mergekit's delta form by a few ulps of |θ|)."""
    total = sum(weights)
    divisor = total if normalize and abs(total) >= 1e-8 else 1.0
    coefficients = [weight * lam / divisor for weight in weights]
    out = torch.mul(base, 1.0 - sum(coefficients))
    for tensor, c in zip(tensors, coefficients, strict=True):
        out.add_(tensor, alpha=c)
    return out


def merge(
    base: torch.Tensor | None,
    tensors: list[torch.Tensor],
    model_params: list[dict[str, Any]],
    params: dict[str, Any],
    generator: torch.Generator | None = None,
    *,
    sparsifier: Sparsifier | None,
    consensus: bool,
) -> torch.Tensor:
    if base is None:
        raise ValueError("this method needs a base model")
    if not tensors:
        return base.clone()
    densities = [float(p.get("density", 1.0)) for p in model_params]
    # The fused form rounds differently from mergekit's delta form: fine in float32 (a few ulps), not in half
    # precision, where the delta form below gives mergekit's very roundings.
    fused = base.dtype in (torch.float32, torch.float64)
    if fused and not consensus and (sparsifier is None or all(d >= 1 for d in densities)):
        weights = [float(p["weight"]) for p in model_params]
        lam = float(params.get("lambda", 1.0))
        return weighted_sum(base, tensors, weights, normalize=bool(params.get("normalize")), lam=lam)

    def one_chunk() -> Iterator[tuple[torch.Tensor, list[torch.Tensor]]]:
        yield base, tensors

    # A whole tensor is the one-chunk case of the streamed form: one implementation for both.
    stream = stream_merge(
        one_chunk, base.numel(), model_params, params, sparsifier=sparsifier, consensus=consensus, generator=generator,
        whole=True,
    )  # fmt: skip
    return next(stream)


def combine(base: torch.Tensor, deltas: torch.Tensor, weights: list[float], params: dict[str, Any],
            consensus: bool) -> torch.Tensor:  # fmt: skip
    """Weighted (sparsified) deltas -> merged tensor: optional sign election, normalize, λ, + base."""
    weight_t = torch.tensor(weights, dtype=base.dtype, device=base.device).view(-1, *([1] * base.dim()))
    deltas.mul_(weight_t)
    if consensus:
        mask = sign_consensus(deltas)
        mixed = (deltas * mask).sum(dim=0)
        divisor = (weight_t * mask).sum(dim=0)
        divisor[divisor == 0] = 1
    else:
        mixed = deltas.sum(dim=0)
        divisor = weight_t.sum(dim=0)
        divisor[divisor.abs() < 1e-8] = 1
    if params.get("normalize"):
        mixed.div_(divisor)
    lam = float(params.get("lambda", 1.0))
    if lam != 1:
        mixed.mul_(lam)
    return mixed.add_(base)


class RandomMasks:
    """The sparse models' random masks for one tensor, drawn as mergekit draws them from its one seeded stream:
    model after model, each over the whole tensor. A whole tensor (one chunk) draws them in that order from
    `generator` itself; row chunks draw each model's from a generator of its own, started where the earlier
    models' draws end (`advance`), so chunk after chunk they give the whole-tensor masks. `rewind` restarts every
    model's draws (the merging pass after the rescale sums: a whole tensor's masks are kept and given again, row
    chunks' drawn again); `finish` leaves `generator` after all of them, where mergekit's next tensor starts."""

    def __init__(self, sparsifier: Sparsifier, densities: list[float], extras: list[dict[str, float]], numel: int,
                 generator: torch.Generator | None, whole: bool) -> None:  # fmt: skip
        self.sparsifier, self.densities, self.extras = sparsifier, densities, extras
        self.numel, self.generator, self.whole = numel, generator, whole
        self.drawing = [draws(sparsifier, d) for d in densities]
        self.gens: list[torch.Generator | None] | None = None
        self.starts: list[torch.Tensor] = []
        self.kept: dict[int, torch.Tensor] = {}  # a whole tensor's masks, given again after `rewind`
        self.replay = False

    def _start(self, delta: torch.Tensor) -> None:
        if self.generator is None:  # unseeded: a fresh stream, still the same masks in every pass
            self.generator = torch.Generator(device=delta.device)
            self.generator.seed()
        if self.whole:
            self.gens = [self.generator] * len(self.densities)
            return
        cursor = torch.Generator(device=delta.device)
        cursor.set_state(self.generator.get_state())
        work = work_dtype(delta.dtype, delta.device)
        last = max((i for i, on in enumerate(self.drawing) if on), default=-1)
        self.gens = []
        for i in range(len(self.densities)):
            gen = torch.Generator(device=delta.device)
            gen.set_state(cursor.get_state())
            self.gens.append(gen)
            self.starts.append(gen.get_state())
            if self.drawing[i] and i < last:
                advance(cursor, self.numel, work, delta.device)

    def mask(self, i: int, delta: torch.Tensor) -> torch.Tensor:
        if self.replay:
            return self.kept[i]
        if self.gens is None:
            self._start(delta)
        mask = self.sparsifier(delta, self.densities[i], generator=self.gens[i], **self.extras[i])
        if self.whole:
            self.kept[i] = mask
        return mask

    def rewind(self) -> None:
        if self.whole:
            self.replay = bool(self.kept)
            return
        if self.gens is None:
            return
        for gen, state in zip(self.gens, self.starts, strict=True):
            gen.set_state(state)

    def finish(self) -> None:
        last = max((i for i, on in enumerate(self.drawing) if on), default=-1)
        if self.gens is not None and not self.whole and last >= 0:
            self.generator.set_state(self.gens[last].get_state())


def stream_merge(
    read_chunks: ReadChunks,
    numel: int,
    model_params: list[dict[str, Any]],
    params: dict[str, Any],
    *,
    sparsifier: Sparsifier | None,
    consensus: bool,
    generator: torch.Generator | None = None,
    whole: bool = False,
) -> Iterator[torch.Tensor]:
    """A task-vector merge of one large tensor in row chunks, in bounded memory; `read_chunks()` starts a new pass
    over (base chunk, [model chunks]).
      - rank selection (TIES, breadcrumbs): two counting passes find each model's exact magnitude thresholds
        (`TopK`, `Band`);
      - with the L1 rescale: one pass draws every chunk's masks and sums |delta| before and after the drop over the
        whole tensor; the masks are then rewound (random ones by resetting the generators), so the merging pass
        draws the very same masks and scales each model's kept deltas by one whole-tensor factor;
      - the merging pass, chunk by chunk.
    Masks are applied and rescaled in mergekit's work dtype (`work_dtype` for the random drops, else the compute
    dtype); a whole tensor's L1 sums are mergekit's own sum calls, row chunks' are summed in float64."""
    densities = [float(p.get("density", 1.0)) for p in model_params]
    extras = [{k: float(p[k]) for k in ("gamma", "epsilon") if k in p} for p in model_params]
    sparse = [sparsifier is not None and d < 1 for d in densities]  # mergekit leaves a density-1 delta untouched
    finish = None
    if sparsifier in RANDOM_SPARSIFIERS:
        masks = RandomMasks(sparsifier, densities, extras, numel, generator, whole)
        keep_mask, rewind, finish = masks.mask, masks.rewind, masks.finish
    else:
        make = RANK_SELECTORS.get(sparsifier)
        if whole and make is not None:  # one chunk: mergekit's sort, so that ties are kept as it keeps them
            make = partial(sorted_selector, make)
        selectors = [make(numel, d, **x) if make and on else None for d, x, on in zip(densities, extras, sparse, strict=True)]
        _count(read_chunks, selectors)

        def keep_mask(i: int, delta: torch.Tensor) -> torch.Tensor:
            return selectors[i].mask(delta)

        def rewind() -> None:
            for selector in selectors:
                if selector is not None:
                    selector.rewind()

    factors: list[torch.Tensor | None] = [None] * len(model_params)
    if params.get("rescale") and any(sparse):
        sums: list[list[Any]] = [[0.0, 0.0] for _ in factors]
        work = torch.float32
        for base, tensors in read_chunks():
            for i, tensor in enumerate(tensors):
                if sparse[i]:
                    delta = tensor - base
                    mask = keep_mask(i, delta)
                    work = mask.dtype
                    delta = delta.to(work)
                    kept = delta * mask
                    if whole:
                        sums[i] = [delta.abs().sum(), kept.abs().sum()]
                    else:
                        sums[i][0] += float(delta.abs().sum(dtype=torch.float64))
                        sums[i][1] += float(kept.abs().sum(dtype=torch.float64))
        factors = [_rescale_factor(b, a, work) for b, a in sums]
        rewind()
    weights = [float(p["weight"]) for p in model_params]
    for base, tensors in read_chunks():
        deltas = torch.empty((len(tensors), *base.shape), dtype=base.dtype, device=base.device)
        for i, tensor in enumerate(tensors):
            torch.sub(tensor, base, out=deltas[i])
            if sparse[i]:
                mask = keep_mask(i, deltas[i])
                kept = deltas[i] if mask.dtype == deltas.dtype else deltas[i].to(mask.dtype)
                kept.mul_(mask)
                if factors[i] is not None:
                    kept.mul_(factors[i])
                if kept is not deltas[i]:
                    deltas[i].copy_(kept)
        yield combine(base, deltas, weights, params, consensus)
    if finish is not None:
        finish()


def _rescale_factor(before: Any, after: Any, dtype: torch.dtype) -> torch.Tensor | None:
    """L1 before / after the drop in the work dtype, as mergekit computes it (None: no rescale, when either norm
    is below 1e-7). Norms given as floats (row chunks summed in float64) are rounded to the work dtype first."""
    b, a = (x if isinstance(x, torch.Tensor) else torch.as_tensor(x, dtype=dtype) for x in (before, after))
    return b / a if b >= 1e-7 and a >= 1e-7 else None


def _count(read_chunks: ReadChunks, selectors: list[Selector | None]) -> None:
    """The two counting passes that settle each rank selector's thresholds."""
    active = [s for s in selectors if s is not None and not s.trivial]
    for feed, settle in (("feed_high", "settle_high"), ("feed_low", "settle_low")):
        if not active:
            return
        for base, tensors in read_chunks():
            for selector, tensor in zip(selectors, tensors, strict=True):
                if selector in active:
                    getattr(selector, feed)(tensor - base)
        for selector in active:
            getattr(selector, settle)()


def task_vector_method(
    name: str,
    *,
    sparsifier: Sparsifier | None,
    consensus: bool,
    normalize: bool,
    rescale: bool,
    extra_model_params: dict[str, Any] | None = None,
) -> MergeMethod:
    model_params: dict[str, Any] = {"weight": REQUIRED, "density": 1.0, **(extra_model_params or {})}
    return MergeMethod(
        name=name,
        fn=partial(merge, sparsifier=sparsifier, consensus=consensus),
        requires_base=True,
        model_params=model_params,
        global_params={"int8_mask": False, "normalize": normalize, "rescale": rescale, "lambda": 1.0},
        random=sparsifier in (keep_random, keep_ranked),
        # Without sparsification (every density 1) the rest, sign election included, is per element.
        elementwise=lambda mp, p: all(float(m.get("density", 1.0)) >= 1 for m in mp),
        linear=lambda mp, p: not consensus and all(float(m.get("density", 1.0)) >= 1 for m in mp),
        stream=partial(stream_merge, sparsifier=sparsifier, consensus=consensus),
    )
