"""passthrough: one model's tensor as is, optionally scaled (mergekit `passthrough`; layer stacking uses it)."""

from __future__ import annotations

from typing import Any

import torch

from engine.methods import MergeMethod


def merge(
    base: torch.Tensor | None,
    tensors: list[torch.Tensor],
    model_params: list[dict[str, Any]],
    params: dict[str, Any],
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    # The config layer guarantees exactly one input per tensor (mergekit's max_inputs=1 contract).
    scale = model_params[0].get("scale")
    return tensors[0] if scale is None else tensors[0] * float(scale)


METHOD = MergeMethod(
    name="passthrough",
    fn=merge,
    requires_base=False,
    model_params={"scale": None},
    global_params={},
    elementwise=lambda mp, p: True,
    linear=lambda mp, p: True,
    inputs=(1, 1),
)
