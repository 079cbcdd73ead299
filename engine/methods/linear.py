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
    weights = torch.tensor(
        [p["weight"] for p in model_params], dtype=tensors[0].dtype, device=tensors[0].device
    )
    stacked = torch.stack(tensors, dim=0)
    weights = weights.view(-1, *([1] * (stacked.dim() - 1)))
    out = (stacked * weights).sum(dim=0)
    if params.get("normalize", True):
        out = out / weights.sum(dim=0)
    return out


METHOD = MergeMethod(
    name="linear",
    fn=merge,
    requires_base=False,
    model_params={"weight": REQUIRED},
    global_params={"normalize": True},
)
