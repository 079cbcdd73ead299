"""nearswap — take the other model's value where it is close to the base's: per entry, weight
w = clamp(t / |base − other|, 0, 1), out = w·other + (1 − w)·base (mergekit `nearswap`)."""

from __future__ import annotations

from typing import Any

import torch

from engine.methods import REQUIRED, MergeMethod
from engine.methods._common import need


def merge(
    base: torch.Tensor | None,
    tensors: list[torch.Tensor],
    model_params: list[dict[str, Any]],
    params: dict[str, Any],
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    need("nearswap", base, tensors, base_required=True, count=1)
    other = tensors[0]
    weight = (float(params["t"]) / (base - other).abs().clamp(min=1e-6)).clamp(min=0, max=1)
    return weight * other + (1 - weight) * base


METHOD = MergeMethod(
    name="nearswap",
    fn=merge,
    requires_base=True,
    global_params={"t": REQUIRED},
    inputs=(1, 1),
    elementwise=lambda mp, p: True,
)
