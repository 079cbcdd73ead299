"""Small helpers the methods share: input checks and reading parameters of mergekit's integer/float kinds."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch


def need(name: str, base: torch.Tensor | None, tensors: list[torch.Tensor], *, base_required: bool,
         count: int | None = None, at_least: int = 1) -> None:  # fmt: skip
    """The input counts mergekit's contract for the method asks for (ValueError otherwise, named by the caller)."""
    if base_required and base is None:
        raise ValueError(f"{name} needs a base model")
    if count is not None and len(tensors) != count:
        raise ValueError(f"{name} needs exactly {count} model(s) besides the base, got {len(tensors)}")
    if len(tensors) < at_least:
        raise ValueError(f"{name} needs at least {at_least} model(s) besides the base, got {len(tensors)}")


def chunk_stats(
    read_chunks: Callable[[], Iterator[tuple[Any, Any]]], reduce: Callable[[Any, Any], torch.Tensor]
) -> torch.Tensor:
    """Sum `reduce(base, tensors)` (a float64 tensor) over one pass of row chunks."""
    total = None
    for base, tensors in read_chunks():
        part = reduce(base, tensors)
        total = part if total is None else total + part
    return total
