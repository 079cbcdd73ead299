"""The merge plan: which output tensor is merged from which input tensors, with which parameters.

A `models:` config maps every tensor name to the same name in each model. A `slices:` config (mergekit's
frankenmerge form) builds the output's layers slice by slice: output layer k of a slice merges layer
`layer_range[0] + offset` of each source, renumbered in the HF name; tensors outside the layers come from the
first slice's sources (those before the layers: embeddings) or the last slice's (those after: final norm, lm_head),
at gradient position 0, as mergekit plans them. Layers outside every slice are not read. A tensor of a source
that the output does not get (a non-layer tensor of a middle slice's model, a layer tensor the slice's first source
lacks) is named in a `DroppedTensorWarning`: mergekit drops such tensors silently, we say so.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.checkpoint import Checkpoint
from engine.config import MergeConfig, SliceSpec, layer_position
from engine.errors import ConfigError, MergeError, MergescopeWarning


class DroppedTensorWarning(MergescopeWarning):
    """A tensor of an input that the output does not get (slices read only some of each model)."""


# Input embeddings (Llama's embed_tokens, GPT-2's wte/wpe, BERT-style word_embeddings): before the layers.
_EMBEDDING_RE = re.compile(r"(?:^|\.)(?:embed_tokens|embeddings?|wte|wpe|word_embeddings)(?:\.|$)")
# A transformer block's tensors: `<prefix>layers.<i>.<rest>` (Llama family, Gemma, Phi-3, Mixtral, LLaVA's
# language model) or `<prefix>h.<i>.<rest>` (GPT-2).
_BLOCK_RE = re.compile(r"^(.*?(?:^|\.)(?:layers|h)\.)(\d+)\.(.+)$")


@dataclass(frozen=True)
class TensorPlan:
    """One output tensor: its name, the (checkpoint ref, input tensor name) of the base and of each input, and
    the resolved parameters for the method."""

    name: str
    base: tuple[str, str] | None
    inputs: tuple[tuple[str, str], ...]
    model_params: list[dict[str, Any]]
    params: dict[str, Any]

    @property
    def reference(self) -> tuple[str, str]:
        """Where the output's shape, dtype and non-float data come from: the base, else the first input."""
        return self.base or self.inputs[0]

    @property
    def sources(self) -> list[tuple[str, str]]:
        return ([self.base] if self.base else []) + list(self.inputs)


def split_block(name: str) -> tuple[str, int, str] | None:
    """(prefix, layer index, rest) of a transformer-block tensor name, else None."""
    match = _BLOCK_RE.match(name)
    return (match.group(1), int(match.group(2)), match.group(3)) if match else None


def plan_models(config: MergeConfig, names: list[str], num_layers: int | None) -> list[TensorPlan]:
    """A `models:` config: every tensor merged from the same name in each model."""
    plans = []
    for name in names:
        model_params, params = config.params_for(name, num_layers)
        plans.append(
            TensorPlan(
                name,
                (config.base_model, name) if config.base_model and config.method.uses_base else None,
                tuple((ref, name) for ref in config.input_models()),
                model_params,
                params,
            )
        )
    return plans


def _layout(ckpt: Checkpoint) -> tuple[list[str], str, dict[int, list[str]], list[str]]:
    """A checkpoint's tensors split as mergekit's planner sees them: before the blocks, the block prefix, each
    block's tensor suffixes, after the blocks."""
    pre: list[str] = []
    post: list[str] = []
    blocks: dict[int, list[str]] = {}
    prefixes = set()
    for name in ckpt.tensor_names():
        parts = split_block(name)
        if parts is None:
            # Embeddings go before the layers, the rest (final norm, head) after, whatever the file's order
            # (safetensors files list lm_head before the layers).
            (pre if _EMBEDDING_RE.search(name) else post).append(name)
            continue
        prefixes.add(parts[0])
        blocks.setdefault(parts[1], []).append(parts[2])
    if len(prefixes) > 1:
        raise ConfigError(
            f"slices: {ckpt.path} has several layer stacks ({', '.join(sorted(prefixes))}); slices need one "
            "(use 'models:' to merge every tensor of a multi-tower model; mergekit needs its per-module "
            "'modules:' form here, which mergescope does not support)"
        )
    if not prefixes:
        raise ConfigError(f"slices: {ckpt.path} has no numbered layers to slice")
    return pre, prefixes.pop(), blocks, post


def _edge(
    config: MergeConfig, piece: SliceSpec, names: list[str], ckpts: Mapping[str, Checkpoint]
) -> list[TensorPlan]:
    """Tensors outside the layers (embeddings, final norm, head) from one slice's sources at t = 0."""
    base = config.slice_base(piece)
    base = base if config.method.uses_base and base in {s.model for s in piece.sources} else None
    out = []
    for name in names:
        for src in piece.sources:
            if name not in ckpts[src.model].tensor_names():
                raise MergeError(f"tensor {name} is missing from {ckpts[src.model].path} (a source of this slice)")
        model_params, params = config.slice_params(piece, name, 0.0)
        out.append(
            TensorPlan(
                name,
                (base, name) if base else None,
                tuple((s.model, name) for s in config.slice_inputs(piece)),
                model_params,
                params,
            )
        )
    return out


def _edge_names(layouts: Mapping[str, tuple], piece: SliceSpec, part: int) -> list[str]:
    """The tensors before (`part` 0) or after (3) the layers in any of a slice's sources, in their order."""
    return list(dict.fromkeys(name for src in piece.sources for name in layouts[src.model][part]))


def plan_slices(config: MergeConfig, ckpts: Mapping[str, Checkpoint]) -> list[TensorPlan]:
    """A `slices:` config: the output's layers slice after slice, renumbered from 0."""
    layouts = {ref: _layout(ckpts[ref]) for ref in config.refs()}
    prefix = layouts[config.slices[0].sources[0].model][1]
    plans = _edge(config, config.slices[0], _edge_names(layouts, config.slices[0], 0), ckpts)
    out_layer = 0
    for i, piece in enumerate(config.slices):
        # As in a `models:` config, a method that treats the base apart gets it as `base`; one that ignores
        # bases merges it as one more source. It is among the slice's sources (checked when the config is loaded).
        base = config.slice_base(piece)
        base = base if config.method.uses_base and base in {s.model for s in piece.sources} else None
        for src in piece.sources:
            have = layouts[src.model][2]
            if src.layer_range[1] > len(have) or any(k not in have for k in range(*src.layer_range)):
                raise ConfigError(
                    f"slices[{i}]: layer_range {list(src.layer_range)} is outside {src.model}'s "
                    f"{len(have)} layers"
                )
        n = piece.num_layers
        for offset in range(n):
            t = offset / (n - 1) if n > 1 else 1.0  # mergekit's gradient position within a slice
            lead = piece.sources[0]
            suffixes = layouts[lead.model][2][lead.layer_range[0] + offset]
            for src in piece.sources[1:]:
                extra = sorted(set(layouts[src.model][2][src.layer_range[0] + offset]) - set(suffixes))
                if extra:
                    layer = src.layer_range[0] + offset
                    _dropped(f"{layouts[src.model][1]}{layer}.{extra[0]}", src.model,
                             f"slices[{i}]'s first source {lead.model} has no such tensor in its layer "
                             f"{lead.layer_range[0] + offset}")  # fmt: skip
            for suffix in suffixes:
                out_name = f"{prefix}{out_layer}.{suffix}"
                where = {
                    s.model: f"{layouts[s.model][1]}{s.layer_range[0] + offset}.{suffix}" for s in piece.sources
                }
                for s in piece.sources:
                    if where[s.model] not in ckpts[s.model].tensor_names():
                        raise MergeError(
                            f"tensor {where[s.model]} is missing from {ckpts[s.model].path} "
                            f"(slices[{i}] needs it for {out_name})"
                        )
                model_params, params = config.slice_params(piece, out_name, t)
                plans.append(
                    TensorPlan(
                        out_name,
                        (base, where[base]) if base else None,
                        tuple((s.model, where[s.model]) for s in config.slice_inputs(piece)),
                        model_params,
                        params,
                    )
                )
            out_layer += 1
    plans += _edge(config, config.slices[-1], _edge_names(layouts, config.slices[-1], 3), ckpts)
    written = {plan.name for plan in plans}
    for ref, (pre, _, _, post) in layouts.items():
        for name in pre + post:
            if name not in written:
                _dropped(name, ref, "slices take the tensors before the layers from the first slice's sources "
                         "and those after from the last slice's")  # fmt: skip
    return plans


def _dropped(name: str, ref: str, why: str) -> None:
    warnings.warn(f"tensor {name} of {ref} is not written: {why} (mergekit drops it silently)",
                  DroppedTensorWarning, stacklevel=3)  # fmt: skip


def schedule_order(plans: list[TensorPlan]) -> list[TensorPlan]:
    """The plans in the order mergekit 0.1.5 merges them: its executor runs tasks sorted by group label, a merge's
    label being the largest of its input tensor names (for a `models:` config, the tensor's own name). A random
    method's masks come from one stream drawn in this order, so ours must follow it. Equal labels (slices reading
    one input layer twice) keep the plan's order."""
    return sorted(plans, key=lambda plan: max(name for _, name in plan.sources))


def output_layers(config: MergeConfig) -> int | None:
    """The output's layer count: the sum of the slices' lengths (None for a `models:` config)."""
    return sum(piece.num_layers for piece in config.slices) if config.slices else None


__all__ = [
    "TensorPlan", "layer_position", "output_layers", "plan_models", "plan_slices", "schedule_order", "split_block",
]  # fmt: skip
