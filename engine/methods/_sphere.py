"""Streaming support for the methods whose result lies in the span of their inputs (karcher, multislerp).

Their iterations only ever combine the input vectors linearly, so they can run on coefficients: one pass sums
the Gram matrix G_ij = x_i·x_j (float64) over the row chunks, the method works out c with out = Σ c_i·x_i in
k-dimensional space, and a second pass applies c chunk by chunk. Equal to the whole-tensor forms up to rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from engine.methods import ReadChunks
from engine.methods._common import chunk_stats

Vectors = Callable[[torch.Tensor | None, list[torch.Tensor]], list[torch.Tensor]]


def gram(read_chunks: ReadChunks, vectors: Vectors) -> torch.Tensor:
    def part(base: torch.Tensor | None, tensors: list[torch.Tensor]) -> torch.Tensor:
        flat = torch.stack([v.reshape(-1) for v in vectors(base, tensors)]).double()
        return (flat @ flat.T).cpu()

    return chunk_stats(read_chunks, part)


def apply(read_chunks: ReadChunks, vectors: Vectors, c: torch.Tensor, add_base: bool) -> Iterator[torch.Tensor]:
    for base, tensors in read_chunks():
        xs = vectors(base, tensors)
        out = sum(float(ci) * x.double() for ci, x in zip(c, xs, strict=True)).to(xs[0].dtype)
        yield base + out if add_base and base is not None else out
