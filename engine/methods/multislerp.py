"""multislerp — barycentric interpolation of any number of models on the hypersphere (mergekit `multislerp`):
project the (base-relative, when a base is given) flattened tensors onto the unit sphere, take their weighted
mean direction, map the weighted tangent vectors back with the exponential map, and scale by the weighted norm.

Whole tensors follow mergekit's arithmetic in the inputs' dtype. Streamed: everything is a combination of the
inputs, so it runs on coefficients over their Gram matrix (`_sphere`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from engine.methods import REQUIRED, MergeMethod, ReadChunks
from engine.methods._common import need
from engine.methods._sphere import apply, gram

ANTIPODAL = (
    "the weighted sum of the models' directions is zero (antipodal models with balancing weights); "
    "use different weights"
)


def _weights(model_params: list[dict[str, Any]], params: dict[str, Any], dtype: torch.dtype) -> torch.Tensor:
    weights = torch.tensor([float(p["weight"]) for p in model_params], dtype=dtype)
    return weights / weights.sum() if params.get("normalize_weights", True) else weights


def _vectors(base: torch.Tensor | None, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    need("multislerp", base, tensors, base_required=False)
    return tensors if base is None else [t - base for t in tensors]


def merge(
    base: torch.Tensor | None,
    tensors: list[torch.Tensor],
    model_params: list[dict[str, Any]],
    params: dict[str, Any],
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    need("multislerp", base, tensors, base_required=False)
    if len(tensors) == 1:
        return tensors[0]
    eps = float(params.get("eps", 1e-8))
    stacked = torch.stack(tensors)
    if base is not None:
        stacked -= base
    flat = stacked.view(len(tensors), -1)
    weights = _weights(model_params, params, stacked.dtype).to(stacked.device)
    norms = torch.norm(flat, dim=-1, keepdim=True)
    units = flat / (norms + eps)
    mean = (units * weights.view(-1, 1)).sum(0)
    size = torch.norm(mean)
    if size < eps:
        if len(tensors) != 2:
            raise ValueError(ANTIPODAL)
        out = (stacked[0] * weights[0] + stacked[1] * weights[1]).view(stacked.shape[1:])
        return out if base is None else out + base
    mean = mean / size
    tangents = units - (units * mean).sum(-1, keepdim=True) * mean
    tangent = (tangents * weights.view(-1, 1)).sum(0)
    step = torch.norm(tangent) + eps
    out = mean * torch.cos(step) + tangent * (torch.sin(step) / step)
    out = (out * (norms.squeeze(-1) * weights).sum()).view(stacked.shape[1:])
    return out if base is None else out + base


def multislerp_coefficients(g: torch.Tensor, weights: torch.Tensor, eps: float) -> torch.Tensor:
    """c with out = Σ c_i·x_i, the same steps as `merge` on coefficients (v·w = cᵀ G d)."""
    k = g.shape[0]
    norms = g.diagonal().clamp(min=0).sqrt()
    units = torch.diag(1 / (norms + eps))  # row i: unit vector i

    def norm(c: torch.Tensor) -> torch.Tensor:
        return (c @ g @ c).clamp(min=0).sqrt()

    mean = weights @ units
    size = norm(mean)
    if size < eps:
        if k != 2:
            raise ValueError(ANTIPODAL)
        return weights.clone()
    mean = mean / size
    dots = units @ g @ mean
    tangent = weights @ (units - dots.unsqueeze(1) * mean)
    step = norm(tangent) + eps
    out = mean * torch.cos(step) + tangent * (torch.sin(step) / step)
    return out * (norms * weights).sum()


def stream(
    read_chunks: ReadChunks,
    numel: int,
    model_params: list[dict[str, Any]],
    params: dict[str, Any],
    generator: torch.Generator | None = None,
) -> Iterator[torch.Tensor]:
    if len(model_params) == 1:
        for _, tensors in read_chunks():
            yield tensors[0]
        return
    weights = _weights(model_params, params, torch.float64)
    c = multislerp_coefficients(gram(read_chunks, _vectors), weights, float(params.get("eps", 1e-8)))
    yield from apply(read_chunks, _vectors, c, add_base=True)


METHOD = MergeMethod(
    name="multislerp",
    fn=merge,
    requires_base=False,
    base="optional",
    model_params={"weight": REQUIRED},
    global_params={"normalize_weights": True, "eps": 1e-8},
    stream=stream,
)
