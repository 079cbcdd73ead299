"""slerp — spherical interpolation between the base and one other model, t = 0 → base, t = 1 → other."""

from __future__ import annotations

from typing import Any

import torch

from engine.methods import REQUIRED, MergeMethod

DOT_THRESHOLD = 0.9995  # nearly (anti)colinear: fall back to linear interpolation, as mergekit does
EPS = 1e-8


def merge(
    base: torch.Tensor | None,
    tensors: list[torch.Tensor],
    model_params: list[dict[str, Any]],
    params: dict[str, Any],
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    if base is None or len(tensors) != 1:
        raise ValueError("slerp needs a base model and exactly one other model")
    t = float(params["t"])
    work = torch.float64 if base.dtype == torch.float64 else torch.float32
    a = base.reshape(-1).to(work)
    b = tensors[0].reshape(-1).to(work)
    norm_a = torch.linalg.vector_norm(a)
    norm_b = torch.linalg.vector_norm(b)
    norm_a = norm_a if norm_a > EPS else torch.ones_like(norm_a)
    norm_b = norm_b if norm_b > EPS else torch.ones_like(norm_b)
    dot = ((a / norm_a) * (b / norm_b)).sum().clamp(-1, 1)
    if dot.abs() > DOT_THRESHOLD:
        coef_a, coef_b = 1 - t, t
    else:
        theta = torch.acos(dot)
        sin_theta = torch.sin(theta)
        coef_a = torch.sin((1 - t) * theta) / sin_theta
        coef_b = torch.sin(t * theta) / sin_theta
    return (coef_a * a + coef_b * b).reshape(base.shape)


METHOD = MergeMethod(
    name="slerp",
    fn=merge,
    requires_base=True,
    model_params={},
    global_params={"t": REQUIRED},
)
