"""karcher — the weighted Karcher (Riemannian) mean of the models' directions on the unit sphere, scaled by
their mean norm (arXiv 2603.04972; mergekit `karcher`). Equal weights; a base_model is just another input.

Whole tensors follow mergekit's arithmetic (float32 norms, directions in the inputs' dtype). Streamed: the mean
stays in the span of the inputs, so the iteration runs on coefficients over their Gram matrix (`_sphere`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from engine.methods import MergeMethod, ReadChunks
from engine.methods._common import need
from engine.methods._sphere import apply, gram


def karcher_mean(tensors: list[torch.Tensor], max_iter: int, tol: float) -> torch.Tensor:
    if len(tensors) == 1:
        return tensors[0]
    work = torch.float64 if tensors[0].dtype == torch.float64 else torch.float32
    alphas = [1.0 / len(tensors)] * len(tensors)
    norms = [torch.linalg.vector_norm(t.to(work)) for t in tensors]
    units = [torch.zeros_like(t) if float(n) == 0 else (t / n).to(t.dtype) for t, n in zip(tensors, norms, strict=True)]
    valid = [i for i, n in enumerate(norms) if float(n) > tol]
    if not valid:
        return torch.zeros_like(tensors[0])
    weights = [alphas[i] / sum(alphas[j] for j in valid) for i in valid]
    points = [units[i] for i in valid]
    mean = torch.zeros_like(points[0])
    for w, u in zip(weights, points, strict=True):
        mean += w * u
    size = torch.linalg.vector_norm(mean.to(work))
    mean = points[0].clone() if float(size) < tol else (mean / size).to(mean.dtype)
    for _ in range(max_iter):
        tangent = torch.zeros_like(mean)
        for w, u in zip(weights, points, strict=True):
            dot = torch.clamp(torch.dot(mean.flatten(), u.flatten()), -1.0, 1.0)
            theta = torch.arccos(dot)
            if float(theta) < tol:
                continue
            tangent += w * (theta / torch.sin(theta)) * (u - dot * mean)
        step = torch.linalg.vector_norm(tangent.to(work))
        if float(step) < tol:
            break
        mean = (torch.cos(step) * mean + torch.sin(step) * (tangent / step)).to(mean.dtype)
        size = torch.linalg.vector_norm(mean.to(work))
        if float(size) > tol:
            mean = (mean / size).to(mean.dtype)
    return sum(a * n for a, n in zip(alphas, norms, strict=True)) * mean


def karcher_coefficients(g: torch.Tensor, max_iter: int, tol: float) -> torch.Tensor:
    """The same iteration on coefficients: a vector is c with v = Σ c_i·x_i, and v·w = cᵀ G d."""
    k = g.shape[0]
    norms = g.diagonal().clamp(min=0).sqrt()
    valid = [i for i in range(k) if float(norms[i]) > tol]
    if not valid:
        return torch.zeros(k, dtype=torch.float64)
    units = torch.zeros(k, k, dtype=torch.float64)  # row i: the coefficients of unit vector i
    for i in valid:
        units[i, i] = 1 / norms[i]

    def norm(c: torch.Tensor) -> torch.Tensor:
        return (c @ g @ c).clamp(min=0).sqrt()

    weights = 1.0 / len(valid)
    mean = sum(weights * units[i] for i in valid)
    size = norm(mean)
    mean = units[valid[0]].clone() if float(size) < tol else mean / size
    for _ in range(max_iter):
        tangent = torch.zeros(k, dtype=torch.float64)
        for i in valid:
            dot = (mean @ g @ units[i]).clamp(-1.0, 1.0)
            theta = torch.arccos(dot)
            if float(theta) < tol:
                continue
            tangent += weights * (theta / torch.sin(theta)) * (units[i] - dot * mean)
        step = norm(tangent)
        if float(step) < tol:
            break
        mean = torch.cos(step) * mean + torch.sin(step) * (tangent / step)
        size = norm(mean)
        if float(size) > tol:
            mean = mean / size
    return float(norms.mean()) * mean


def _inputs(base: torch.Tensor | None, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    need("karcher", base, tensors, base_required=False)
    return tensors


def merge(
    base: torch.Tensor | None,
    tensors: list[torch.Tensor],
    model_params: list[dict[str, Any]],
    params: dict[str, Any],
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    return karcher_mean(_inputs(base, tensors), int(params["max_iter"]), float(params["tol"]))


def stream(
    read_chunks: ReadChunks,
    numel: int,
    model_params: list[dict[str, Any]],
    params: dict[str, Any],
    generator: torch.Generator | None = None,
) -> Iterator[torch.Tensor]:
    c = karcher_coefficients(gram(read_chunks, _inputs), int(params["max_iter"]), float(params["tol"]))
    yield from apply(read_chunks, _inputs, c, add_base=False)


METHOD = MergeMethod(
    name="karcher",
    fn=merge,
    requires_base=False,
    global_params={"max_iter": 10.0, "tol": 1e-5},
    stream=stream,
)
