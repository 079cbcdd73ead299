"""model_stock — Model Stock (Jang et al. 2024): move from the base towards the models' average by a ratio set by
the angle between their deltas, t = k·cosθ / (1 + (k − 1)·cosθ)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from engine.methods import MergeMethod, ReadChunks


def ratio(cos: torch.Tensor, k: int) -> torch.Tensor:
    """t = k·cosθ / (1 + (k − 1)·cosθ); 0 (keep the base) where that has no finite value."""
    denominator = 1 + (k - 1) * cos
    singular = denominator.abs() < 1e-6
    return torch.where(singular, torch.zeros_like(cos), k * cos / torch.where(singular, 1, denominator))


def _checked(base: torch.Tensor | None, tensors: list[torch.Tensor]) -> None:
    if base is None or len(tensors) < 2:
        raise ValueError("model_stock needs a base model and at least two other models")


def merge(
    base: torch.Tensor | None,
    tensors: list[torch.Tensor],
    model_params: list[dict[str, Any]],
    params: dict[str, Any],
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    _checked(base, tensors)
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
    t = ratio(torch.stack(cosines).mean(dim=0).unsqueeze(-1), len(ws))
    average = sum(ws) / len(ws)
    return (t * average + (1 - t) * w0).reshape(base.shape)


def stream(
    read_chunks: ReadChunks,
    numel: int,
    model_params: list[dict[str, Any]],
    params: dict[str, Any],
    generator: torch.Generator | None = None,
) -> Iterator[torch.Tensor]:
    """Model Stock over row chunks. filter_wise: a chunk holds whole rows, so each chunk is merged as it comes.
    Otherwise a first pass sums the offsets' dot products (float64) for the one whole-tensor angle, the second
    merges chunk by chunk; equal to `merge` up to the summation order."""
    if params.get("filter_wise"):
        for base, tensors in read_chunks():
            yield merge(base, tensors, model_params, params)
        return
    gram = None
    for base, tensors in read_chunks():
        _checked(base, tensors)
        offsets = torch.stack([(w - base).reshape(-1) for w in tensors]).double()
        part = (offsets @ offsets.T).cpu()
        gram = part if gram is None else gram + part
    k = gram.shape[0]
    norms = gram.diagonal().sqrt()
    cosines = [
        (gram[i, j] / (norms[i] * norms[j]).clamp(min=1e-6)).clamp(-1, 1) for i in range(k) for j in range(i + 1, k)
    ]
    t = float(ratio(torch.stack(cosines).mean(), k))
    for base, tensors in read_chunks():
        yield t * (sum(tensors) / k) + (1 - t) * base


METHOD = MergeMethod(
    name="model_stock",
    fn=merge,
    requires_base=True,
    model_params={},
    global_params={"filter_wise": False},
    stream=stream,
)
