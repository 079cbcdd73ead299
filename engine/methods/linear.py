"""linear: weighted average of the models' tensors (mergekit `linear`)."""

from __future__ import annotations

from typing import Any

import torch

from engine.methods import REQUIRED, MergeMethod


def merge(
    base: torch.Tensor | None,
    tensors: list[torch.Tensor],
    model_params: list[dict[str, Any]],
    params: dict[str, Any],
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    # Σ w_i θ_i accumulated in place, then divided by Σ w_i (mergekit's order of operations; no stacked copy),
    # in float32 (float64 for float64 inputs) and rounded once to the inputs' dtype, as mergekit does.
    weights = [float(p["weight"]) for p in model_params]
    dtype = tensors[0].dtype
    work = torch.float64 if dtype == torch.float64 else torch.float32
    out = torch.mul(tensors[0].to(work), weights[0])
    for tensor, weight in zip(tensors[1:], weights[1:], strict=True):
        out.add_(tensor.to(work), alpha=weight)
    if params.get("normalize", True):
        out.div_(sum(weights))
    return out.to(dtype)


METHOD = MergeMethod(
    name="linear",
    fn=merge,
    requires_base=False,
    model_params={"weight": REQUIRED},
    global_params={"normalize": True},
    elementwise=lambda mp, p: True,
    linear=lambda mp, p: True,
)
