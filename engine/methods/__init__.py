"""Merge methods: one small pure function per method, with mergekit 0.1.5's semantics.

Every method has the signature
    fn(base, tensors, model_params, params, generator) -> Tensor
where `tensors` are the non-base models' tensors for one weight name, `model_params[i]` holds model i's resolved
per-model parameters (weight, density...) and `params` the method's global parameters (normalize, lambda...).
No I/O here: the streaming merge (`engine.merge`) reads tensors and resolves per-tensor parameter values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

REQUIRED = object()  # sentinel: a per-model parameter without default

# A streamed form's input: each call starts a new pass over one tensor's row chunks, (base chunk or None when
# the method has no base, [model chunks]).
ReadChunks = Callable[[], Iterator[tuple[torch.Tensor, list[torch.Tensor]]]]


BASE_POLICIES = ("required", "optional", "ignored")


@dataclass(frozen=True)
class MergeMethod:
    name: str
    fn: Callable[..., torch.Tensor]
    requires_base: bool
    model_params: dict[str, Any] = field(default_factory=dict)
    global_params: dict[str, Any] = field(default_factory=dict)
    random: bool = False
    # Whether, for these (model_params, params), output element i depends only on input elements i: then a huge
    # tensor may be merged in row chunks (bounded memory). False for anything with whole-tensor statistics
    # (top-k, norms, angles).
    elementwise: Callable[[list[dict[str, Any]], dict[str, Any]], bool] = field(default=lambda mp, p: False)
    # Whether the output is a linear combination of the inputs (so a NaN/Inf in any input reaches the output and
    # checking the output alone detects it); sign election or sparsification can drop a NaN, so not those.
    linear: Callable[[list[dict[str, Any]], dict[str, Any]], bool] = field(default=lambda mp, p: False)
    # Optional multi-pass row-chunk form for methods with whole-tensor statistics (top-k, L1 rescale, angles):
    # stream(read_chunks: ReadChunks, numel, model_params, params, generator=None) -> iterator of output row chunks.
    stream: Callable[..., Iterator[torch.Tensor]] | None = None
    # How many non-base models mergekit accepts: (minimum, maximum or None).
    inputs: tuple[int, int | None] = (1, None)
    # mergekit's base policy: "required" (merged into the base), "optional" (used when the config names one) or
    # "ignored" (a base_model is just another input); unset: from requires_base.
    base: str = ""

    def __post_init__(self) -> None:
        if not self.base:
            object.__setattr__(self, "base", "required" if self.requires_base else "ignored")
        if self.base not in BASE_POLICIES or self.requires_base != (self.base == "required"):
            raise ValueError(f"{self.name}: inconsistent base policy {self.base!r}")

    @property
    def uses_base(self) -> bool:
        """Whether a configured base_model is treated apart from the other models."""
        return self.base != "ignored"


def _registry() -> dict[str, MergeMethod]:
    import importlib

    modules = (
        "linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "breadcrumbs", "breadcrumbs_ties",
        "della", "della_linear", "slerp", "model_stock", "arcee_fusion", "nuslerp", "karcher", "multislerp",
        "nearswap", "ram", "ramplus_tl", "sce", "passthrough",
    )  # fmt: skip
    methods = [importlib.import_module(f"engine.methods.{name}").METHOD for name in modules]
    return {m.name: m for m in methods}


METHODS: dict[str, MergeMethod] = _registry()

# Every parameter name some method declares: such a key under another method is ignored, as mergekit does, with a
# warning saying which method ignores it; a name no method declares gets a warning with its likely spelling (an
# error under `--strict`).
KNOWN_PARAMETERS: frozenset[str] = frozenset(
    name for m in METHODS.values() for name in (*m.model_params, *m.global_params)
)
