"""task_arithmetic: base + λ · Σ w_i (θ_i − base) (mergekit `task_arithmetic`, Ilharco et al. 2023)."""

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
    assert base is not None, "task_arithmetic needs a base model"
    out = torch.zeros_like(base)
    total_weight = 0.0
    for tensor, p in zip(tensors, model_params, strict=True):
        out.add_(tensor - base, alpha=float(p["weight"]))
        total_weight += float(p["weight"])
    if params.get("normalize", False) and abs(total_weight) >= 1e-8:
        out.div_(total_weight)
    lam = float(params.get("lambda", 1.0))
    if lam != 1.0:
        out.mul_(lam)
    return out.add_(base)


METHOD = MergeMethod(
    name="task_arithmetic",
    fn=merge,
    requires_base=True,
    model_params={"weight": REQUIRED},
    global_params={"normalize": False, "lambda": 1.0},
)
