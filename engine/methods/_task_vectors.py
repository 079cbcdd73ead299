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

from collections.abc import Callable
from functools import partial
from typing import Any

import torch

from engine.methods import REQUIRED, MergeMethod

Sparsifier = Callable[..., torch.Tensor]


def rescale_l1(delta: torch.Tensor, masked: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    before, after = delta.abs().sum(), masked.abs().sum()
    if before < eps or after < eps:
        return masked
    return masked * (before / after)


def keep_largest(delta: torch.Tensor, density: float, **_: Any) -> torch.Tensor:
    """Mask keeping the `density` fraction of entries with the largest magnitude (at least one)."""
    if density <= 0 or delta.numel() == 0:
        return torch.zeros_like(delta)
    k = max(1, int(density * delta.numel()))
    order = torch.argsort(delta.abs().reshape(-1).float(), descending=True)
    mask = torch.zeros(delta.numel(), dtype=delta.dtype, device=delta.device)
    mask[order[:k]] = 1
    return mask.reshape_as(delta)


def keep_middle(delta: torch.Tensor, density: float, gamma: float = 0.01, **_: Any) -> torch.Tensor:
    """Breadcrumbs: drop the `gamma` fraction of largest-magnitude outliers, then the smallest, keeping `density`."""
    n = delta.numel()
    target = int(density * n)
    n_top = int(gamma * n)
    n_bottom = max(0, n - target - n_top)
    order = torch.sort(delta.abs().reshape(-1).float(), descending=False).indices
    mask = torch.zeros(n, dtype=delta.dtype, device=delta.device)
    mask[order[n_bottom : n_bottom + target]] = 1
    return mask.reshape_as(delta)


def keep_random(delta: torch.Tensor, density: float, generator: torch.Generator | None = None, **_: Any):
    """DARE: keep each entry independently with probability `density`."""
    probs = torch.full_like(delta, density, dtype=torch.float32)
    return torch.bernoulli(probs, generator=generator).to(delta.dtype)


def keep_ranked(
    delta: torch.Tensor,
    density: float,
    epsilon: float = 0.15,
    generator: torch.Generator | None = None,
    **_: Any,
) -> torch.Tensor:
    """DELLA (MagPrune): keep probability rises linearly with magnitude rank within each row, from
    density − ε (smallest) to density + ε (largest)."""
    if density <= 0:
        return torch.zeros_like(delta)
    if not (density - epsilon > 0 and density + epsilon < 1):
        raise ValueError(f"epsilon {epsilon} must keep density ± epsilon inside (0, 1) (density {density})")
    rows = delta if delta.dim() >= 2 else delta.unsqueeze(0)
    ranks = rows.abs().argsort(dim=1).argsort(dim=1).to(torch.float32) + 1
    lo = ranks.min(dim=1, keepdim=True).values
    hi = ranks.max(dim=1, keepdim=True).values
    position = ((ranks - lo) / (hi - lo)).clamp(0, 1)
    probs = (density - epsilon) + position * 2 * epsilon
    return torch.bernoulli(probs, generator=generator).to(delta.dtype).reshape(delta.shape)


def sign_consensus(weighted: torch.Tensor) -> torch.Tensor:
    """TIES 'sum' election: per entry, the sign of the summed weighted deltas (ties go positive); keep the
    deltas that agree with it."""
    majority = (weighted.sum(dim=0) >= 0).to(weighted.dtype) * 2 - 1
    return weighted.sign() == majority


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
    deltas = torch.empty((len(tensors), *base.shape), dtype=base.dtype, device=base.device)
    for i, (tensor, p) in enumerate(zip(tensors, model_params, strict=True)):
        delta = tensor - base
        density = float(p.get("density", 1.0))
        if sparsifier is not None and density < 1:
            extras = {k: float(p[k]) for k in ("gamma", "epsilon") if k in p}
            masked = delta * sparsifier(delta, density, generator=generator, **extras)
            delta = rescale_l1(delta, masked) if params.get("rescale") else masked
        deltas[i] = delta
    weights = torch.tensor([float(p["weight"]) for p in model_params], dtype=base.dtype, device=base.device)
    weights = weights.view(-1, *([1] * base.dim()))
    deltas.mul_(weights)
    if consensus:
        mask = sign_consensus(deltas).to(base.dtype)
        mixed = (deltas * mask).sum(dim=0)
        divisor = (weights * mask).sum(dim=0)
        divisor[divisor == 0] = 1
    else:
        mixed = deltas.sum(dim=0)
        divisor = weights.sum(dim=0)
        divisor[divisor.abs() < 1e-8] = 1
    if params.get("normalize"):
        mixed = mixed / divisor
    lam = float(params.get("lambda", 1.0))
    if lam != 1:
        mixed = mixed * lam
    return base + mixed


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
    )
