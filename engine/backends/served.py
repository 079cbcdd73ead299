"""Direct swaps: a merge written straight into vLLM's served parameters, in one fused pass.

The resident path (`engine.backends.resident`) keeps a sweep's checkpoints in memory in their checkpoint layout and
still hands every merged tensor to vLLM's `reload_weights`, which restores each layer's parameters, runs the
weight loaders (fusing q/k/v into qkv_proj and gate/up into gate_up_proj, cutting this rank's tensor-parallel
shard, padding the vocabulary) and re-processes every layer. This module does that layout work once per
checkpoint instead of once per swap:

- setup (first swap of a family): each checkpoint the merge names (θ_pre, θ_G, each θ_Dk) is pushed once through
  the model's own `load_weights`, into stand-in parameters of the merge's compute dtype (float32 for task
  arithmetic, whatever the served dtype) shaped like the served parameters before processing (vLLM's recorded
  load-time metadata: for a CPU linear whose weight vLLM replaced by a packed copy, the full weight). The
  stand-ins are kept: the resident set, in served layout, one set per tensor-parallel rank (each rank's loaders
  cut its own shard).
- every swap: for each served parameter, row chunk by row chunk, the method's own function (`method.fn`, the one
  `merge_tensors` calls) combines the resident chunks and the result is cast to the served dtype and written
  into the parameter in place. The merge is elementwise (checked), so the same operations on the same elements
  in the same order give the very bits the streaming merge, the exporter and vLLM's loader give.
- a layer whose served weight is only a packed copy (on a CPU vLLM re-packs each linear weight for oneDNN and
  drops the plain one) gets its full weight written into a reused staging buffer, then the layer's own
  `process_weights_after_loading` re-creates the packed copy from it, as vLLM does after a load. That re-pack is
  the only extra work, and only for layers that have a packed copy. An embedding keeps its weight and gets a
  packed copy too, for models that use it as the output projection; that copy is re-made at its first use, and
  within every swap once it has been used (a Llama's embed_tokens copy is never used, its lm_head's is).
- on a CPU the layers are shared out, largest first, to a crew of pinned single-threaded workers, one per core the
  engine's threads use (`engine.backends.crew`: ATen's own threads pay a wake-up per chunk and vLLM re-packs one
  layer on one thread); each worker has its own staging buffer. A layer is written and re-packed by one worker.

Qualifies: an elementwise linear merge (task arithmetic, linear, TIES/DARE/... at density 1 without sign
election; not random), the same method parameters for every tensor, no slices, no vocabulary re-indexing, an
unquantized model without LoRA. Anything else, or inputs that do not fit in memory, takes the resident or
streaming path.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from engine.backends.resident import device_free_bytes, fits, resident_reason
from engine.errors import MergeError

if TYPE_CHECKING:
    from engine.checkpoint import Checkpoint
    from engine.config import MergeConfig
    from engine.merge import MergeSetup

# Elements per chunk of the fused pass: on a CPU every input's chunk and the output's stay in the core's cache
# (2 MiB of float32 each; smaller chunks pay Python's per-call cost, measured: 64K elements take 2-3x as long as
# 512K); on a GPU chunks are large (each chunk is a few kernel launches).
CHUNK_ELEMENTS = {"cpu": 1 << 19, "cuda": 1 << 26}


@dataclass
class Target:
    """One served parameter: where it lives and how it is written."""

    name: str  # the model's name for it (first module that owns it)
    owners: list[tuple[torch.nn.Module, str]]  # (module, attribute): more than one for tied weights
    param: torch.nn.Parameter  # the served parameter (empty when vLLM keeps only a packed copy)
    shape: tuple[int, ...]  # its shape before processing (the loaders' layout)
    dtype: torch.dtype  # its dtype before processing (the served dtype)
    template: torch.Tensor  # the recorded load-time tensor (class and loader attributes)

    @property
    def packed(self) -> bool:
        """vLLM keeps only a processed copy: the full weight goes through a staging buffer and a re-pack."""
        return tuple(self.param.shape) != self.shape

    @property
    def numel(self) -> int:
        return int(torch.Size(self.shape).numel())


def _templates(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's parameters as vLLM recorded them at load time (before processing), by attribute; parameters it
    did not record (a bias) as they are now."""
    from vllm.model_executor.model_loader.reload.layerwise import LAYERWISE_INFO

    info = LAYERWISE_INFO.get(module)
    recorded = dict(info.restore_metadata[0]) if info is not None else {}
    current = {n: p for n, p in module._parameters.items() if p is not None}
    return {name: recorded.get(name, current.get(name)) for name in {**recorded, **current}}


def served_targets(model: torch.nn.Module) -> list[Target]:
    """Every served parameter of `model`, once each (tied weights share one target), in module order."""
    by_id: dict[int, Target] = {}
    for prefix, module in model.named_modules():
        templates = _templates(module)
        for attr, template in templates.items():
            param = module._parameters.get(attr)
            if param is None or template is None:
                continue
            name = f"{prefix}.{attr}" if prefix else attr
            target = by_id.get(id(param))
            if target is not None:
                target.owners.append((module, attr))
                continue
            by_id[id(param)] = Target(
                name, [(module, attr)], param, tuple(template.shape), template.dtype, template
            )
    return list(by_id.values())


@dataclass(eq=False)
class Layer:
    """Served parameters written together and re-packed once all are in: a module's parameters, joined with those
    of the other modules that share one of them (tied weights)."""

    targets: list[Target] = field(default_factory=list)
    modules: list[torch.nn.Module] = field(default_factory=list)

    @property
    def numel(self) -> int:
        return sum(t.numel for t in self.targets)

    @property
    def staging_bytes(self) -> int:
        """The staging room the layer's packed weights take side by side."""
        return sum(t.numel * t.dtype.itemsize for t in self.targets if t.packed)


def served_layers(targets: list[Target]) -> list[Layer]:
    """`targets` grouped by the modules that own them, in order; a target owned by several modules (tied weights)
    puts them in one group."""
    group_of: dict[int, Layer] = {}
    layers: list[Layer] = []
    for target in targets:
        groups: list[Layer] = []
        for module, _ in target.owners:
            group = group_of.get(id(module))
            if group is not None and all(group is not g for g in groups):
                groups.append(group)
        if not groups:
            groups = [Layer()]
            layers.append(groups[0])
        layer = groups[0]
        for other in groups[1:]:
            layer.targets.extend(other.targets)
            layer.modules.extend(other.modules)
            group_of.update({id(m): layer for m in other.modules})
            layers = [kept for kept in layers if kept is not other]
        layer.targets.append(target)
        for module, _ in target.owners:
            if id(module) not in group_of:
                group_of[id(module)] = layer
                layer.modules.append(module)
    return layers


def _stand_in(template: torch.Tensor, module: torch.nn.Module, dtype: torch.dtype, device: torch.device):
    """A NaN-filled tensor shaped like `template`, of `dtype`, carrying its class and loader attributes (bound to
    `module`), for the model's weight loaders to fill (NaN marks what no loader wrote)."""
    from vllm.model_executor.model_loader.reload.sanitize import restore_layer_refs

    tensor = torch.full(template.shape, float("nan"), dtype=dtype, device=device)
    tensor.__class__ = template.__class__
    tensor.__dict__ = {key: _unwrapped(value) for key, value in template.__dict__.items()}
    return restore_layer_refs(tensor, module)


def _unwrapped(value: Any) -> Any:
    """A weight loader without the deferring wrapper `reload_weights` leaves on the recorded tensors (it would
    only queue the weights for that reload's bookkeeping instead of copying them)."""
    while callable(value) and getattr(value, "__name__", "") == "online_process_loader":
        value = value.__wrapped__
    return value


def load_served(
    model: torch.nn.Module,
    targets: list[Target],
    tensors: Iterator[tuple[str, torch.Tensor]],
    dtype: torch.dtype,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """Push checkpoint tensors (finite, already in `dtype`) through the model's own `load_weights` into stand-in
    parameters of `dtype` in the served layout (fused, sharded, padded), by target name. A parameter no loader
    wrote is left out (vLLM keeps such a parameter as it is too); elements no loader wrote (padding) are 0. The
    served parameters are put back untouched whatever happens."""
    stand_ins = [_stand_in(t.template, t.owners[0][0], dtype, device) for t in targets]
    try:
        for target, stand_in in zip(targets, stand_ins, strict=True):
            for module, attr in target.owners:
                module._parameters[attr] = stand_in
        with torch.no_grad():
            model.load_weights(tensors)
    finally:
        for target in targets:
            for module, attr in target.owners:
                module._parameters[attr] = target.param
    out: dict[str, torch.Tensor] = {}
    for target, stand_in in zip(targets, stand_ins, strict=True):
        unwritten = torch.isnan(stand_in.data)
        if bool(unwritten.all()):
            continue
        out[target.name] = (
            stand_in.data.masked_fill_(unwritten, 0) if bool(unwritten.any()) else stand_in.data
        )
    if not out:
        raise MergeError("the model's weight loaders wrote none of the served parameters")
    return out


def write_merged(dest: torch.Tensor, base: torch.Tensor | None, inputs: list[torch.Tensor],
                 combine: Callable[[torch.Tensor | None, list[torch.Tensor]], torch.Tensor],
                 casts: tuple[torch.dtype, ...], name: str) -> None:  # fmt: skip
    """dest[:] = combine(base, inputs), cast through `casts` in turn (the merge's output dtype, then the served
    dtype) and into dest, in cache-sized chunks of the flat tensors (the merge is elementwise: chunking changes no
    result). A non-finite result raises MergeError naming the tensor."""
    from engine.merge import all_finite

    out = dest.view(-1)
    flat_base = base.view(-1) if base is not None else None
    flat = [x.view(-1) for x in inputs]
    step = CHUNK_ELEMENTS.get(dest.device.type, CHUNK_ELEMENTS["cpu"])
    for start in range(0, out.numel(), step):
        end = min(out.numel(), start + step)
        merged = combine(
            flat_base[start:end] if flat_base is not None else None, [x[start:end] for x in flat]
        )
        if not all_finite(merged):
            raise MergeError(f"tensor {name}: the merge overflowed to Inf/NaN (all inputs are finite)")
        for dtype in casts if casts[-1] != dest.dtype else casts[:-1]:  # the copy into dest casts last
            if merged.dtype != dtype:
                merged = merged.to(dtype)
        out[start:end].copy_(merged)


def _digest(tensor: torch.Tensor) -> str:
    data = tensor.detach().contiguous().cpu()
    return hashlib.sha256(data.view(torch.uint8).numpy().tobytes()).hexdigest()[:24]


def packed_weight(module: torch.nn.Module, target: Target) -> torch.Tensor | None:
    """The weight a CPU layer serves from its packed copy, read back exactly: its linear applied to the identity
    (one 1.0 per row, so every output is one weight, unrounded). None where there is no such copy."""
    linear = getattr(module, "cpu_linear", None)
    if linear is None or len(target.shape) != 2:
        return None
    eye = torch.eye(target.shape[1], dtype=target.dtype, device=target.param.device)
    with torch.no_grad():
        return linear(eye, module.weight, None).t()


def served_digests(model: torch.nn.Module) -> dict[str, str]:
    """A hash of every weight the model serves, by name: the parameter itself, and for a layer that computes with
    a packed copy the weight read back from that copy (tests compare two swaps' served weights)."""
    out = {}
    for target in served_targets(model):
        module = target.owners[0][0]
        if not target.packed:
            out[target.name] = _digest(target.param.data)
        packed = packed_weight(module, target)
        if packed is not None:
            out[f"{target.name} (packed)"] = _digest(packed)
    return out


def direct_reason(config: MergeConfig, setup: MergeSetup, vllm_config: Any) -> str | None:
    """None when `config` can be written straight into the served weights; else why not."""
    from engine.merge import _aligner

    reason = resident_reason(config, setup.ckpts)
    if reason is not None:
        return reason
    if getattr(getattr(vllm_config, "model_config", None), "quantization", None):
        return "the served model is quantized"
    if getattr(vllm_config, "lora_config", None):
        return "LoRA is enabled"
    first = setup.plan[0]
    refs = [ref for ref, _ in first.sources]
    method = config.method
    for plan in setup.plan:
        if plan.model_params != first.model_params or plan.params != first.params:
            return f"tensor {plan.name} has its own method parameters (one set must hold for every tensor)"
        if [ref for ref, _ in plan.sources] != refs or any(name != plan.name for _, name in plan.sources):
            return f"tensor {plan.name} is read under another name or from other models"
        if not method.elementwise(plan.model_params, plan.params):
            return f"{method.name} is not elementwise (tensor {plan.name})"
        aligned = setup.tokenizer is not None and setup.tokenizer.alignment is not None
        if aligned and _aligner(setup.tokenizer, refs, setup.ckpts, plan) is not None:
            return f"tensor {plan.name} is re-indexed to another vocabulary"
    dtypes = {setup.ckpts[ref].info(n).dtype for p in setup.plan for ref, n in p.sources}
    if len(dtypes) != 1 or not next(iter(dtypes)).is_floating_point:
        return f"the checkpoints' tensors are not all of one floating dtype ({sorted(map(str, dtypes))})"
    return None


def _reprocess(module: torch.nn.Module) -> None:
    """vLLM's own after-load processing of one layer (on a CPU: a new packed copy of its weight, made from the
    weight now in place), as `reload_weights` runs it; nothing for a layer without a quantization method."""
    from vllm.model_executor.layers.quantization.base_config import QuantizeMethodBase

    method = getattr(module, "quant_method", None)
    if isinstance(method, QuantizeMethodBase):
        method.process_weights_after_loading(module)


def _unused_copy(module: torch.nn.Module, packed: bool) -> bool:
    """Whether the layer's packed copy sits beside its served weight and was not used since it was made: an
    embedding keeps its weight for lookups and gets a packed copy for use as an output projection, which only
    some models use (a Llama's lm_head, not its embed_tokens)."""
    from vllm.model_executor.layers.vocab_parallel_embedding import UnquantizedEmbeddingMethod

    return (
        not packed  # the weight is kept (a linear keeps only its packed copy)
        and hasattr(module, "cpu_linear")
        and isinstance(getattr(module, "quant_method", None), UnquantizedEmbeddingMethod)
        and not getattr(module, "_mergescope_copy_used", False)
    )


def _reprocess_when_used(module: torch.nn.Module) -> None:
    """Re-make the layer's packed copy at its first use instead of now (the stale copy is dropped at once); a layer
    seen in use is re-packed within every later swap."""

    def repack_on_use(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        module._mergescope_copy_used = True
        _reprocess(module)
        return module.cpu_linear(x, weight, bias)

    module.cpu_linear = repack_on_use


@dataclass
class _Resident:
    source: Checkpoint  # the on-disk handle it was read from (a new handle means its files changed)
    tensors: dict[str, torch.Tensor]  # by target name, served layout, compute dtype

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())


@dataclass
class DirectSwaps:
    """One engine rank's served-layout resident set, and the fused write into its served parameters."""

    model: torch.nn.Module
    device: torch.device
    vllm_config: Any = None
    mode: str = "auto"
    last_reason: str = "no merge swapped yet"
    _targets: list[Target] | None = None
    _resident: dict[str, _Resident] = field(default_factory=dict)
    _compute: torch.dtype | None = None
    _staging: list[torch.Tensor] = field(default_factory=list)  # one buffer per worker

    @property
    def nbytes(self) -> int:
        staging = sum(buffer.numel() for buffer in self._staging)
        return sum(r.nbytes for r in self._resident.values()) + staging

    def clear(self) -> None:
        self._resident.clear()
        self._staging = []

    def targets(self) -> list[Target]:
        """The served parameters; found again (and the resident set dropped) if vLLM replaced any."""
        current = self._targets is not None and all(
            module._parameters.get(attr) is t.param for t in self._targets for module, attr in t.owners
        )
        if not current:
            self._targets = served_targets(self.model)
            self.clear()
        return self._targets

    def workers(self) -> int:
        """How many threads write a swap: a crew of one per engine core on a CPU, one on a GPU (kernels queue)."""
        from engine.backends.crew import crew_size

        return crew_size() if self.device.type == "cpu" else 1

    def swap(self, config: MergeConfig, opened: Mapping[str, Checkpoint]) -> dict[str, float] | None:
        """Write `config`'s merge into the served weights; None when this path does not apply (`last_reason`).
        Returns seconds: preparing the merge, then the write and the re-pack as summed over the workers (each is
        thread time, so with several workers they add up to more than the swap took), and the worker count."""
        from engine.merge import compute_dtype_for, parse_dtype, prepare_merge

        if self.mode == "off":
            self.last_reason = "resident swaps are off"
            self.clear()
            return None
        start = time.perf_counter()
        setup = prepare_merge(config, opened)
        reason = direct_reason(config, setup, self.vllm_config)
        if reason is not None:
            self.last_reason = reason
            self.clear()
            return None
        first = setup.plan[0]
        refs = [ref for ref, _ in first.sources]
        in_dtype = setup.ckpts[refs[0]].info(first.name).dtype
        compute = compute_dtype_for(config, [in_dtype] * len(refs))
        out_dtype = parse_dtype(config.out_dtype) or parse_dtype(config.dtype) or in_dtype
        if not self._ensure(refs, opened, compute):
            return None
        ready = time.perf_counter()
        base = refs[0] if first.base else None
        inputs = [ref for ref, _ in first.inputs]
        fn, model_params, params = config.method.fn, first.model_params, first.params

        def combine(b: torch.Tensor | None, xs: list[torch.Tensor]) -> torch.Tensor:
            return fn(b, xs, model_params, params, None)

        seconds = self._write(combine, base, inputs, out_dtype)
        packed = sum(1 for t in self.targets() if t.packed)
        workers = len(self._staging) or 1
        self.last_reason = (
            f"{len(refs)} checkpoints resident in the served layout ({self.nbytes / 2**30:.2f} GiB): one fused pass "
            f"into the served weights"
            + (f", {packed} packed weights re-packed" if packed else "")
            + (f", {workers} threads" if workers > 1 else "")
        )
        return {"prepare_s": ready - start, **seconds, "workers": float(workers)}

    def _ensure(self, refs: list[str], opened: Mapping[str, Checkpoint], compute: torch.dtype) -> bool:
        """Every ref resident in the served layout in `compute` (read through the loaders if missing), and a
        staging buffer per worker."""
        targets = self.targets()
        if compute != self._compute:
            self._resident.clear()
        keep = {r: v for r, v in self._resident.items() if r in refs and v.source is opened[r]}
        missing = [r for r in refs if r not in keep]
        per_ckpt = sum(t.numel for t in targets) * compute.itemsize
        staging = max((layer.staging_bytes for layer in served_layers(targets)), default=0)
        workers = self.workers()
        had = sum(buffer.numel() for buffer in self._staging)
        needed = per_ckpt * len(missing) + max(0, staging * workers - had)
        dropped = self.nbytes - sum(v.nbytes for v in keep.values())
        self._resident = keep
        if missing and self.mode == "auto" and not fits(needed, device_free_bytes(self.device) + dropped):
            self.last_reason = (
                f"the {len(refs)} checkpoints in the served layout ({needed / 2**30:.2f} GiB to add) do not fit in "
                f"free {self.device.type} memory"
            )
            self.clear()
            return False
        self._compute = compute
        for ref in missing:
            self._resident[ref] = _Resident(opened[ref], self._read(opened[ref], compute))
        names = [set(v.tensors) for v in self._resident.values()]
        if any(n != names[0] for n in names):
            raise MergeError(f"the checkpoints {', '.join(refs)} fill different served parameters")
        if len(self._staging) != workers or any(b.numel() < staging for b in self._staging):
            self._staging = [
                torch.empty(staging, dtype=torch.uint8, device=self.device) for _ in range(workers)
            ]
        return True

    def _read(self, ckpt: Checkpoint, compute: torch.dtype) -> dict[str, torch.Tensor]:
        from engine.merge import all_finite

        def tensors() -> Iterator[tuple[str, torch.Tensor]]:
            for name in ckpt.tensor_names():
                tensor = ckpt.get(name, device=self.device)
                if tensor.is_floating_point():
                    if not all_finite(tensor):
                        raise MergeError(f"tensor {name} in {ckpt.info(name).file} contains NaN or Inf")
                    tensor = tensor.to(compute)
                yield name, tensor

        return load_served(self.model, self.targets(), tensors(), compute, self.device)

    def _write(self, combine: Callable[..., torch.Tensor], base: str | None, inputs: list[str],
               out_dtype: torch.dtype) -> dict[str, float]:  # fmt: skip
        """The fused pass over every served parameter, layer by layer, largest first, on the workers; returns the
        thread seconds spent writing and re-packing."""
        from engine.backends import crew

        written = next(iter(self._resident.values())).tensors
        layers = served_layers([t for t in self.targets() if t.name in written])
        layers.sort(key=lambda layer: layer.numel, reverse=True)  # largest first: the workers end together
        seconds = {"write_s": 0.0, "pack_s": 0.0}
        lock = threading.Lock()

        def write_layer(worker: int, layer: Layer) -> None:
            write_s, pack_s = self._write_layer(
                layer, self._staging[worker], combine, base, inputs, out_dtype
            )
            with lock:
                seconds["write_s"] += write_s
                seconds["pack_s"] += pack_s

        if len(self._staging) > 1:
            crew.run(write_layer, layers)
        else:
            for layer in layers:
                write_layer(0, layer)
        return seconds

    def _write_layer(self, layer: Layer, staging: torch.Tensor, combine: Callable[..., torch.Tensor],
                     base: str | None, inputs: list[str], out_dtype: torch.dtype) -> tuple[float, float]:  # fmt: skip
        """One layer: each parameter merged into place (a packed one into `staging`), then the layer re-packed.
        Returns the seconds spent writing and re-packing."""
        begin = time.perf_counter()
        staged: list[tuple[Target, torch.Tensor]] = []
        offset = 0  # the layer's packed weights side by side in the staging buffer
        with torch.no_grad():
            for t in layer.targets:
                if t.packed:
                    nbytes = t.numel * t.dtype.itemsize
                    dest = staging[offset : offset + nbytes].view(t.dtype).view(t.shape)
                    offset += nbytes
                    staged.append((t, dest))
                else:
                    dest = t.param.data
                write_merged(
                    dest,
                    self._resident[base].tensors[t.name] if base is not None else None,
                    [self._resident[ref].tensors[t.name] for ref in inputs],
                    combine,
                    (out_dtype, t.dtype),
                    t.name,
                )
            written = time.perf_counter()
            packed = {id(m) for t, _ in staged for m, _ in t.owners}
            try:
                for t, dest in staged:
                    for module, attr in t.owners:
                        module._parameters[attr] = torch.nn.Parameter(dest, requires_grad=False)
                for module in layer.modules:
                    if _unused_copy(module, id(module) in packed):
                        _reprocess_when_used(module)
                    else:
                        _reprocess(module)
            except BaseException:
                # No staging buffer is left as a layer's weight (the served weights are unknown until the next swap
                # rewrites them all; the backend forces that).
                for t, _ in staged:
                    for module, attr in t.owners:
                        module._parameters[attr] = t.param
                raise
            for t, _ in staged:
                for module, attr in t.owners:
                    self._settle(module, attr, t, staging)
        return written - begin, time.perf_counter() - written

    def _settle(self, module: torch.nn.Module, attr: str, t: Target, staging: torch.Tensor) -> None:
        """After the re-pack: the served (empty) parameter object back in place. Should vLLM have kept the staging
        buffer as the weight instead, the layer gets its own copy (the buffer is reused for the next layer)."""
        now = module._parameters.get(attr)
        if now is None or now.numel() == 0:
            module._parameters[attr] = t.param
        elif _same_storage(now, staging):
            module._parameters[attr] = torch.nn.Parameter(now.data.clone(), requires_grad=False)
            t.param = module._parameters[attr]


def _same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
