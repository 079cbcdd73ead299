"""nuslerp — spherical interpolation of two models (of their deltas when a base is given), mergekit `nuslerp`.

t = w_2 / (w_1 + w_2) from the two models' weights (0.5 when they sum to ~0). The sphere is that of
  - the whole flattened tensor (`nuslerp_flatten`, the default),
  - else each column (`nuslerp_row_wise`: vectors along dim 0),
  - else each row (vectors along the last dim).
Nearly colinear vectors are interpolated linearly. Streamed: rows are whole in a chunk, so the row form merges
chunk by chunk; the flattened and column forms first sum the dot products over the rows (float64), then apply
the per-vector coefficients chunk by chunk.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from engine.methods import REQUIRED, MergeMethod, ReadChunks
from engine.methods._common import chunk_stats, need

EPS = 1e-8


def fraction(model_params: list[dict[str, Any]]) -> float:
    weights = [float(p["weight"]) for p in model_params]
    total = sum(weights)
    return 0.5 if abs(total) < 1e-6 else weights[1] / total


def interpolate(t: float, v0: torch.Tensor, v1: torch.Tensor, *, dim: int, flatten: bool) -> torch.Tensor:
    """Slerp of v0 → v1 along `dim` (or over everything), in the inputs' dtype as mergekit computes it."""
    shape = v0.shape
    if flatten:
        v0, v1 = v0.reshape(-1), v1.reshape(-1)
    elif dim != -1:
        v0, v1 = v0.transpose(dim, -1), v1.transpose(dim, -1)
    u0 = v0 / torch.norm(v0, dim=-1, keepdim=True).clamp(min=1e-7)
    u1 = v1 / torch.norm(v1, dim=-1, keepdim=True).clamp(min=1e-7)
    cos = torch.sum(u0 * u1, dim=-1, keepdim=True).clamp(-1, 1)
    colinear = (1 - cos.square()) <= EPS**2
    theta = torch.acos(torch.where(colinear, 0, cos))
    out = (torch.sin((1 - t) * theta) * v0 + torch.sin(t * theta) * v1) / torch.sin(theta)
    out = torch.where(colinear, (1 - t) * v0 + t * v1, out)
    if dim != -1 and not flatten:
        out = out.transpose(dim, -1)
    return out.reshape(shape)


def _vectors(base: torch.Tensor | None, tensors: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    need("nuslerp", base, tensors, base_required=False, count=2)
    a, b = tensors
    return (a, b) if base is None else (a - base, b - base)


def merge(
    base: torch.Tensor | None,
    tensors: list[torch.Tensor],
    model_params: list[dict[str, Any]],
    params: dict[str, Any],
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    v0, v1 = _vectors(base, tensors)
    dim = 0 if params.get("nuslerp_row_wise") else -1
    out = interpolate(fraction(model_params), v0, v1, dim=dim, flatten=bool(params.get("nuslerp_flatten", True)))
    return out if base is None else base + out


def coefficients(dots: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(c0, c1) with slerp = c0·v0 + c1·v1, from the summed v0·v0, v1·v1, v0·v1 (stacked on dim 0)."""
    n0, n1 = dots[0].sqrt().clamp(min=1e-7), dots[1].sqrt().clamp(min=1e-7)
    cos = (dots[2] / (n0 * n1)).clamp(-1, 1)
    colinear = (1 - cos.square()) <= EPS**2
    theta = torch.acos(torch.where(colinear, 0, cos))
    sin = torch.where(colinear, 1, torch.sin(theta))
    c0 = torch.where(colinear, 1 - t, torch.sin((1 - t) * theta) / sin)
    c1 = torch.where(colinear, t, torch.sin(t * theta) / sin)
    return c0, c1


def stream(
    read_chunks: ReadChunks,
    numel: int,
    model_params: list[dict[str, Any]],
    params: dict[str, Any],
    generator: torch.Generator | None = None,
) -> Iterator[torch.Tensor]:
    flatten, row_wise = bool(params.get("nuslerp_flatten", True)), bool(params.get("nuslerp_row_wise"))
    if not flatten and not row_wise:
        for base, tensors in read_chunks():
            yield merge(base, tensors, model_params, params)
        return
    t = fraction(model_params)

    def dots(base: torch.Tensor | None, tensors: list[torch.Tensor]) -> torch.Tensor:
        v0, v1 = (v.double() for v in _vectors(base, tensors))
        products = torch.stack([v0 * v0, v1 * v1, v0 * v1])
        # flattened: one sum over everything; column-wise: a sum over this chunk's rows per column
        return (products.reshape(3, -1).sum(dim=1) if flatten else products.sum(dim=1)).cpu()

    c0, c1 = coefficients(chunk_stats(read_chunks, dots), t)
    for base, tensors in read_chunks():
        v0, v1 = _vectors(base, tensors)
        out = (c0.to(v0.device) * v0.double() + c1.to(v0.device) * v1.double()).to(v0.dtype)
        yield out if base is None else base + out


METHOD = MergeMethod(
    name="nuslerp",
    fn=merge,
    requires_base=False,
    base="optional",
    model_params={"weight": REQUIRED},
    global_params={"nuslerp_row_wise": False, "nuslerp_flatten": True},
    inputs=(2, 2),
    stream=stream,
)
