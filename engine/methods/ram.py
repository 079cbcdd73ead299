"""ram and ramplus_tl — Reinforced Agent Merging (arXiv 2601.13572), mergekit's tensor-local form.

Per entry, a model "contributes" where |θ_i − base| > epsilon. An entry one model alone changes takes that
model's delta whole; an entry several change takes their average. ramplus_tl also scales each model's unique
deltas by λ_i = 1 + r·clamp(ρ_i, 0, α), ρ_i = (its shared entries) / (its unique entries), counted over the whole
tensor: a statistics pass when streamed. The expressions follow mergekit's, so that half precision rounds alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from engine.methods import MergeMethod, ReadChunks
from engine.methods._common import chunk_stats, need


def _parts(base: torch.Tensor, tensors: list[torch.Tensor], epsilon: float):
    """(deltas zeroed where not contributing, contributing mask, contributor count, shared, unique), stacked."""
    deltas = torch.stack([t - base for t in tensors])
    contributing = deltas.abs() > epsilon
    counts = contributing.sum(dim=0, keepdim=True)
    return deltas * contributing, contributing, counts, counts > 1, counts == 1


def _combine(base: torch.Tensor, parts, scale: torch.Tensor | None = None) -> torch.Tensor:
    deltas, _, counts, shared, unique = parts
    own = deltas * unique if scale is None else deltas * unique * scale.view(-1, *([1] * base.dim()))
    return base + (own + deltas * shared / counts.clamp(min=1)).sum(dim=0)


def _counts(parts) -> torch.Tensor:
    """Per model: (shared entries, unique entries) it contributes, as float64 [k, 2]."""
    _, contributing, _, shared, unique = parts
    flat = [(contributing & m).reshape(len(contributing), -1).sum(dim=1) for m in (shared, unique)]
    return torch.stack(flat, dim=1).double().cpu()


def _lambdas(counts: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    epsilon, r, alpha = (float(params[k]) for k in ("epsilon", "r", "alpha"))
    rho = counts[:, 0] / counts[:, 1].clamp(min=epsilon)
    return (1 + r * rho.clamp(min=0, max=alpha)).float()


def merge_ram(
    base: torch.Tensor | None,
    tensors: list[torch.Tensor],
    model_params: list[dict[str, Any]],
    params: dict[str, Any],
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    need("ram", base, tensors, base_required=True, at_least=0)
    if not tensors:
        return base
    return _combine(base, _parts(base, tensors, float(params["epsilon"])))


def merge_plus(
    base: torch.Tensor | None,
    tensors: list[torch.Tensor],
    model_params: list[dict[str, Any]],
    params: dict[str, Any],
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    need("ramplus_tl", base, tensors, base_required=True, at_least=0)
    if not tensors:
        return base
    parts = _parts(base, tensors, float(params["epsilon"]))
    return _combine(base, parts, _lambdas(_counts(parts), params))


def stream_plus(
    read_chunks: ReadChunks,
    numel: int,
    model_params: list[dict[str, Any]],
    params: dict[str, Any],
    generator: torch.Generator | None = None,
) -> Iterator[torch.Tensor]:
    """ramplus_tl over row chunks: a first pass counts each model's shared and unique entries, the second merges."""
    epsilon = float(params["epsilon"])
    counts = chunk_stats(read_chunks, lambda base, tensors: _counts(_parts(base, tensors, epsilon)))
    lambdas = _lambdas(counts, params)
    for base, tensors in read_chunks():
        yield _combine(base, _parts(base, tensors, epsilon), lambdas)


METHOD = MergeMethod(
    name="ram",
    fn=merge_ram,
    requires_base=True,
    global_params={"epsilon": 1e-5},
    inputs=(0, None),
    elementwise=lambda mp, p: True,
)
RAMPLUS_TL = MergeMethod(
    name="ramplus_tl",
    fn=merge_plus,
    requires_base=True,
    global_params={"r": 0.1, "alpha": 0.2, "epsilon": 1e-5},
    inputs=(0, None),
    stream=stream_plus,
)
