"""slerp — spherical interpolation between the base and one other model, t = 0 → base, t = 1 → other."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from engine.methods import REQUIRED, MergeMethod, ReadChunks

DOT_THRESHOLD = 0.9995  # nearly (anti)colinear: fall back to linear interpolation, as mergekit does
EPS = 1e-8


def coefficients(dot: torch.Tensor, t: float) -> tuple[Any, Any]:
    """(coef_base, coef_other) for the cosine `dot` between the two flattened tensors."""
    dot = dot.clamp(-1, 1)
    if dot.abs() > DOT_THRESHOLD:
        return 1 - t, t
    theta = torch.acos(dot)
    sin_theta = torch.sin(theta)
    return torch.sin((1 - t) * theta) / sin_theta, torch.sin(t * theta) / sin_theta


def _checked(base: torch.Tensor | None, tensors: list[torch.Tensor]) -> torch.dtype:
    if base is None or len(tensors) != 1:
        raise ValueError("slerp needs a base model and exactly one other model")
    return torch.float64 if base.dtype == torch.float64 else torch.float32


def _nonzero(norm: torch.Tensor) -> torch.Tensor:
    return norm if norm > EPS else torch.ones_like(norm)


def merge(
    base: torch.Tensor | None,
    tensors: list[torch.Tensor],
    model_params: list[dict[str, Any]],
    params: dict[str, Any],
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    work = _checked(base, tensors)
    a = base.reshape(-1).to(work)
    b = tensors[0].reshape(-1).to(work)
    norm_a = _nonzero(torch.linalg.vector_norm(a))
    norm_b = _nonzero(torch.linalg.vector_norm(b))
    coef_a, coef_b = coefficients(((a / norm_a) * (b / norm_b)).sum(), float(params["t"]))
    return (coef_a * a + coef_b * b).reshape(base.shape).to(base.dtype)  # one rounding, as mergekit


def stream(
    read_chunks: ReadChunks,
    numel: int,
    model_params: list[dict[str, Any]],
    params: dict[str, Any],
    generator: torch.Generator | None = None,
) -> Iterator[torch.Tensor]:
    """slerp over row chunks: a first pass sums a·a, b·b and a·b (float64), the second interpolates chunk by chunk.
    Equal to `merge` up to the summation order of the cosine."""
    sums = torch.zeros(3, dtype=torch.float64)
    for base, tensors in read_chunks():
        _checked(base, tensors)
        a, b = base.reshape(-1).double(), tensors[0].reshape(-1).double()
        sums += torch.stack([a @ a, b @ b, a @ b]).cpu()
    norm_a, norm_b = _nonzero(sums[0].sqrt()), _nonzero(sums[1].sqrt())
    coef_a, coef_b = coefficients(sums[2] / (norm_a * norm_b), float(params["t"]))
    for base, tensors in read_chunks():
        work = _checked(base, tensors)
        yield (float(coef_a) * base.to(work) + float(coef_b) * tensors[0].to(work)).to(base.dtype)


METHOD = MergeMethod(
    name="slerp",
    fn=merge,
    requires_base=True,
    model_params={},
    global_params={"t": REQUIRED},
    stream=stream,
)
