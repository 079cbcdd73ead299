"""model_stock — Model Stock (Jang et al. 2024): move from the base towards the models' average by a ratio set by
the angle between their deltas, t = k·cosθ / (1 + (k − 1)·cosθ)."""

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
    if base is None or len(tensors) < 2:
        raise ValueError("model_stock needs a base model and at least two other models")
    if params.get("filter_wise") and base.dim() >= 1:
        # One angle per output row; a 1-D tensor is a single row.
        w0 = base if base.dim() >= 2 else base.unsqueeze(0)
        ws = [w if w.dim() >= 2 else w.unsqueeze(0) for w in tensors]
    else:
        w0 = base.reshape(-1)
        ws = [w.reshape(-1) for w in tensors]
    offsets = [w - w0 for w in ws]
    cosines = []
    for i, da in enumerate(offsets):
        for db in offsets[i + 1 :]:
            norms = torch.norm(da, dim=-1) * torch.norm(db, dim=-1)
            cosines.append(((da * db).sum(dim=-1) / norms.clamp(min=1e-6)).clamp(-1, 1))
    cos = torch.stack(cosines).mean(dim=0).unsqueeze(-1)
    k = len(ws)
    denominator = 1 + (k - 1) * cos
    singular = denominator.abs() < 1e-6  # no finite estimate: keep the base
    t = torch.where(singular, torch.zeros_like(cos), k * cos / torch.where(singular, 1, denominator))
    average = sum(ws) / k
    return (t * average + (1 - t) * w0).reshape(base.shape)


METHOD = MergeMethod(
    name="model_stock",
    fn=merge,
    requires_base=True,
    model_params={},
    global_params={"filter_wise": False},
)
