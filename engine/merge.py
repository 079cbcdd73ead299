"""The streaming merge: one iterator of `(name, tensor)`, read and merged one tensor at a time.

It feeds the exporter (`engine.export`) and the serving backends (in-place weight reload) alike; peak memory is
the handful of input tensors for one weight name, never whole models. Large tensors of elementwise merges
(task arithmetic, linear...) go in row chunks: the exporter writes each chunk as it is made, so its memory stays
at a few chunks whatever the model size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from engine.checkpoint import Checkpoint, open_checkpoint
from engine.config import MergeConfig
from engine.errors import MergeError, MergescopeError
from engine.methods import MergeMethod
from engine.plan import TensorPlan, plan_models, plan_slices, schedule_order
from engine.tokenizer_build import BuiltTokenizer, build_tokenizer, tokenizer_setting
from engine.vocab import align_rows, is_vocab_tensor, vocab_size_of

DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}


def parse_dtype(name: str | None) -> torch.dtype | None:
    if name is None:
        return None
    try:
        return DTYPES[name]
    except KeyError:
        raise MergeError(f"dtype: unknown dtype {name!r} (known: {', '.join(DTYPES)})") from None


def compute_dtype_for(config: MergeConfig, input_dtypes: list[torch.dtype]) -> torch.dtype:
    """mergekit's compute dtype: the config's `dtype`, else the inputs' (promoted); our `compute_dtype` overrides
    both (e.g. float32 for a more precise half-precision merge)."""
    chosen = parse_dtype(config.compute_dtype) or parse_dtype(config.dtype)
    if chosen is not None:
        return chosen
    promoted = input_dtypes[0]
    for dtype in input_dtypes[1:]:
        promoted = torch.promote_types(promoted, dtype)
    return promoted


def precision_note(config: MergeConfig) -> str:
    """One model-card line saying which precision the merge computed in."""
    if config.compute_dtype:
        return (
            f"Computed in {config.compute_dtype} (mergescope's `compute_dtype`, instead of mergekit's compute in "
            f"`dtype`{' ' + config.dtype if config.dtype else ''}); mergekit would round differently."
        )
    where = f"`dtype` {config.dtype}" if config.dtype else "the inputs' dtype (no `dtype` set)"
    return f"Computed in {where}, as mergekit does."


def open_all(
    config: MergeConfig, checkpoints: Mapping[str, Checkpoint] | None = None, *, allow_pickle: bool = False
) -> dict[str, Checkpoint]:
    opened = dict(checkpoints or {})
    for ref in config.refs():
        if ref not in opened:
            opened[ref] = open_checkpoint(ref, allow_pickle=allow_pickle)
    return opened


VOCAB_HINT = (
    "set `tokenizer_source: union` (or `base`, or a model) or a `tokenizer:` block to align the vocabularies "
    "by token, as mergekit does"
)


def check_compatible(config: MergeConfig, ckpts: Mapping[str, Checkpoint]) -> list[str]:
    """Names to merge, in the reference model's order. Raises MergeError for anything that does not line up:
    a missing tensor, a tensor only some models have, a shape mismatch (vocab included, unless the config aligns
    vocabularies: then token-indexed tensors may differ in their first axis)."""
    refs = config.refs()
    reference = ckpts[refs[0]]
    names = reference.tensor_names()
    ref_set = set(names)
    aligned = tokenizer_setting(config) is not None
    ref_vocab = vocab_size_of(reference.config)
    for ref in refs[1:]:
        other = ckpts[ref]
        vocab = vocab_size_of(other.config)
        if not aligned and ref_vocab is not None and vocab is not None and vocab != ref_vocab:
            raise MergeError(
                f"vocab size differs: {reference.path} has {ref_vocab}, {other.path} has {vocab} "
                f"(config.json vocab_size); {VOCAB_HINT}"
            )
        if config.slices:
            continue  # slices read only some layers: the plan checks each tensor it needs, and its shapes
        other_names = set(other.tensor_names())
        missing = [n for n in names if n not in other_names]
        if missing:
            raise MergeError(
                f"tensor {missing[0]} is missing from {other.path} (present in {reference.path})"
            )
        extra = sorted(other_names - ref_set)
        if extra:
            raise MergeError(f"tensor {extra[0]} is only in {other.path}, not in {reference.path}")
        for name in names:
            check_shapes(name, [(reference, name), (other, name)], aligned)
    return names


def check_shapes(out_name: str, sources: list[tuple[Checkpoint, str]], aligned: bool) -> None:
    """The inputs of one output tensor must have one shape (token-indexed rows may differ when aligned)."""
    (first, first_name), *rest = sources
    a = first.info(first_name)
    for ckpt, name in rest:
        b = ckpt.info(name)
        same = a.shape == b.shape or (aligned and is_vocab_tensor(out_name) and a.shape[1:] == b.shape[1:])
        if not same:
            hint = f"; {VOCAB_HINT}" if is_vocab_tensor(out_name) else ""
            raise MergeError(
                f"shape mismatch for tensor {out_name}: {list(a.shape)} in {a.file} vs {list(b.shape)} in {b.file}"
                f"{hint}"
            )


def merge_plan(config: MergeConfig, ckpts: Mapping[str, Checkpoint]) -> list[TensorPlan]:
    """Every output tensor with its inputs and parameters; raises before any merge work when something does not
    line up (parameters resolved for every tensor, so a bad value fails here too)."""
    names = check_compatible(config, ckpts)
    if not config.slices:
        plans = plan_models(config, names, ckpts[config.refs()[0]].num_layers)
    else:
        plans = plan_slices(config, ckpts)
        aligned = tokenizer_setting(config) is not None
        for plan in plans:
            check_shapes(plan.name, [(ckpts[ref], name) for ref, name in plan.sources], aligned)
    return schedule_order(plans) if config.method.random else plans


def random_stream(seed: int, device: torch.device | str) -> torch.Generator:
    """The random methods' one stream, as mergekit's `--random-seed N` seeds it (`torch.manual_seed(N)`): the
    tensors draw from it one after another in mergekit's schedule order (`plan.schedule_order`)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


def all_finite(tensor: torch.Tensor) -> bool:
    """True when no element is NaN or ±Inf. A float32 sum is one cheap pass (no mask allocated) and is finite
    whenever every element is, barring overflow; only a non-finite sum pays for the exact elementwise check."""
    if not tensor.is_floating_point():
        return True
    if bool(torch.isfinite(tensor.sum(dtype=torch.float32 if tensor.dtype != torch.float64 else None))):
        return True
    return bool(torch.isfinite(tensor).all())


# Row-chunk size (bytes per input, in the compute dtype) for elementwise merges of large tensors: small enough
# that a chunk of every input stays in the CPU cache while it is combined, large enough for efficient reads.
CHUNK_BYTES = 2 * 2**20
# Methods with whole-tensor statistics (norms, angles, top-k, L1 sums) have a multi-pass row-chunk form whose
# statistics are summed chunk by chunk in float64: within 1e-5 of mergekit in float32, at a peak of a few chunks.
# Half precision is different: mergekit's roundings of a whole-tensor half-precision computation cannot be
# reproduced chunk by chunk (seen: multislerp, karcher, nuslerp, Model Stock many steps apart), so a
# half-precision merge takes a tensor whole while each input fits this many bytes in the compute dtype — 1 GiB
# holds a 7B or 13B model's largest matrix (the embeddings, 0.25 GiB in bfloat16) — and streams only beyond.
HALF_WHOLE_BYTES = 2**30


@dataclass
class RowChunks:
    """A merged tensor delivered as consecutive row chunks, each computed when asked for. The exporter writes
    them as they come (memory: a few chunks, whatever the tensor's size); `materialize()` joins them."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    chunks: Iterator[torch.Tensor]

    def materialize(self, device: str | torch.device = "cpu") -> torch.Tensor:
        out = torch.empty(self.shape, dtype=self.dtype, device=device)
        row = 0
        for chunk in self.chunks:
            out[row : row + chunk.shape[0]] = chunk
            row += chunk.shape[0]
        return out


@dataclass
class _Job:
    """Everything needed to merge one tensor."""

    name: str
    base: Checkpoint | None
    inputs: list[Checkpoint]
    method: MergeMethod
    model_params: list[dict]
    params: dict
    generator: torch.Generator | None
    device: str | torch.device
    compute: torch.dtype
    target: torch.dtype
    # Each input checkpoint's own name for this tensor (slices renumber layers); absent: `name` everywhere.
    in_names: dict[int, str] | None = None
    # Re-indexes whole input tensors (base first) to the output vocabulary (token-indexed tensors only).
    align: Callable[[list[torch.Tensor]], list[torch.Tensor]] | None = None

    def source_name(self, ckpt: Checkpoint) -> str:
        return self.in_names.get(id(ckpt), self.name) if self.in_names else self.name

    def read(self, ckpt: Checkpoint, rows: tuple[int, int] | None, check: bool, buffer=None) -> torch.Tensor:
        name = self.source_name(ckpt)
        if rows is None:
            tensor = ckpt.get(name, device=self.device)
        else:
            tensor = ckpt.get_rows(name, *rows, device=self.device, buffer=buffer)
        if check and not all_finite(tensor):
            where = f" (rows {rows[0]}-{rows[1] - 1})" if rows else ""
            raise MergeError(f"tensor {name} in {ckpt.info(name).file} contains NaN or Inf{where}")
        return tensor.to(self.compute)

    def load(self, rows: tuple[int, int] | None = None, buffers=None) -> list[torch.Tensor]:
        """The inputs (base first) for the whole tensor or a row range. For a method linear in its inputs a
        NaN/Inf anywhere reaches the output, so only the output is checked (see `combine`)."""
        linear = self.method.linear(self.model_params, self.params)
        ckpts = ([self.base] if self.base is not None else []) + self.inputs
        buffers = buffers or [None] * len(ckpts)
        tensors = [self.read(c, rows, not linear, b) for c, b in zip(ckpts, buffers, strict=True)]
        return self.align(tensors) if self.align is not None else tensors

    def combine(self, tensors: list[torch.Tensor], rows: tuple[int, int] | None = None) -> torch.Tensor:
        base = tensors.pop(0) if self.base is not None else None
        try:
            merged = self.method.fn(base, tensors, self.model_params, self.params, self.generator)
        except MergescopeError:
            raise
        except Exception as exc:
            raise MergeError(f"{self.method.name} failed on tensor {self.name}: {exc}") from exc
        if self.method.linear(self.model_params, self.params) and not all_finite(merged):
            for ckpt in ([self.base] if self.base is not None else []) + self.inputs:
                self.read(ckpt, rows, True)  # names the input holding the NaN/Inf
            raise MergeError(f"tensor {self.name}: the merge overflowed to Inf/NaN (all inputs are finite)")
        return merged.to(self.target)

    def run(self) -> torch.Tensor:
        return self.combine(self.load())

    def streamed(self, rows: int, rows_per: int, numel: int, done: Callable[[], None]) -> Iterator[torch.Tensor]:
        """The method's multi-pass chunked form (rank selection, random drop with the L1 rescale): each pass
        re-reads the inputs chunk by chunk."""
        ckpts = ([self.base] if self.base is not None else []) + self.inputs
        buffers = [
            torch.empty(rows_per * c.info(self.source_name(c)).nbytes // rows, dtype=torch.uint8) for c in ckpts
        ]

        def read_chunks() -> Iterator[tuple[torch.Tensor | None, list[torch.Tensor]]]:
            for start in range(0, rows, rows_per):
                span = (start, min(rows, start + rows_per))
                tensors = [self.read(c, span, True, b) for c, b in zip(ckpts, buffers, strict=True)]
                yield (tensors.pop(0) if self.base is not None else None), tensors

        try:
            stream = self.method.stream(read_chunks, numel, self.model_params, self.params, generator=self.generator)
            for chunk in stream:
                yield chunk.to(self.target)
        except MergescopeError:
            raise
        except Exception as exc:
            raise MergeError(f"{self.method.name} failed on tensor {self.name}: {exc}") from exc
        done()

    def chunks(self, rows: int, rows_per: int, done: Callable[[], None]) -> Iterator[torch.Tensor]:
        """Row chunks of an elementwise merge. The next chunk's inputs are read on a helper thread while this
        one is combined and written (reads release the GIL), into a second set of reused buffers."""
        ckpts = ([self.base] if self.base is not None else []) + self.inputs
        sets = [
            [torch.empty(rows_per * c.info(self.source_name(c)).nbytes // rows, dtype=torch.uint8) for c in ckpts]
            for _ in range(2)
        ]
        spans = [(start, min(rows, start + rows_per)) for start in range(0, rows, rows_per)]
        pending = _reader().submit(self.load, spans[0], sets[0])
        for i, span in enumerate(spans):
            tensors = pending.result()
            if i + 1 < len(spans):
                pending = _reader().submit(self.load, spans[i + 1], sets[(i + 1) % 2])
            yield self.combine(tensors, span)
        done()


_READER: ThreadPoolExecutor | None = None


def _reader() -> ThreadPoolExecutor:
    global _READER
    if _READER is None:
        _READER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mergescope-read")
    return _READER


def _aligner(
    built: BuiltTokenizer, refs: list[str], ckpts: Mapping[str, Checkpoint], plan: TensorPlan
) -> Callable[[list[torch.Tensor]], list[torch.Tensor]] | None:
    """Row re-indexing for a token-indexed tensor, or None when it would change nothing."""
    rows = {ref: ckpts[ref].info(name).shape[0] for ref, name in plan.sources}
    if built.alignment is None or built.alignment.trivial(refs, rows):
        return None

    def align(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        # A model that is both base and input is one tensor here: keyed by ref, re-expanded in order.
        aligned = align_rows(dict(zip(refs, tensors, strict=True)), built.alignment)
        return [aligned[ref] for ref in refs]

    return align


@dataclass
class MergeSetup:
    """A validated merge, ready to stream: opened checkpoints, the plan, the output tokenizer if one is built."""

    config: MergeConfig
    ckpts: dict[str, Checkpoint]
    plan: list[TensorPlan]
    tokenizer: BuiltTokenizer | None

    def out_shape(self, plan: TensorPlan) -> tuple[int, ...]:
        ref, name = plan.reference
        shape = self.ckpts[ref].info(name).shape
        if self.tokenizer is not None and is_vocab_tensor(plan.name):
            return (self.tokenizer.vocab_size, *shape[1:])
        return shape


def prepare_merge(
    config: MergeConfig, checkpoints: Mapping[str, Checkpoint] | None = None, *, allow_pickle: bool = False
) -> MergeSetup:
    ckpts = open_all(config, checkpoints, allow_pickle=allow_pickle)
    plan = merge_plan(config, ckpts)
    return MergeSetup(config, ckpts, plan, build_tokenizer(config, ckpts))


def _merge_stream(
    config: MergeConfig,
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    checkpoints: Mapping[str, Checkpoint] | None = None,
    progress: Callable[[int, int], None] | None = None,
    seed: int = 0,
    allow_pickle: bool = False,
    setup: MergeSetup | None = None,
) -> Iterator[tuple[str, torch.Tensor | RowChunks]]:
    """`merge_tensors`, except that large tensors merged in row chunks (elementwise methods, TIES top-k) come
    as `RowChunks`, for the exporter to write chunk by chunk."""
    setup = setup or prepare_merge(config, checkpoints, allow_pickle=allow_pickle)
    ckpts = setup.ckpts
    method = config.method
    if isinstance(dtype, str):
        dtype = parse_dtype(dtype)
    out_dtype = dtype or parse_dtype(config.out_dtype) or parse_dtype(config.dtype)
    total = len(setup.plan)
    # Random methods draw tensor after tensor from one stream: each tensor's draws must be complete (its row
    # chunks consumed) before the next tensor's start.
    stream = random_stream(seed, device) if method.random else None
    drawing: list[str] = []
    for i, plan in enumerate(setup.plan):
        if drawing:
            raise RuntimeError(f"tensor {drawing[0]}: its row chunks were not consumed before the next tensor")
        name = plan.name
        ref_ckpt, ref_name = ckpts[plan.reference[0]], plan.reference[1]
        info = ref_ckpt.info(ref_name)

        def done(i: int = i) -> None:
            drawing.clear()
            if progress is not None:
                progress(i + 1, total)

        if not info.dtype.is_floating_point:
            # Integer buffers (position ids and the like) are not merged: the reference's is used.
            done()
            yield name, ref_ckpt.get(ref_name, device=device)
            continue
        base = ckpts[plan.base[0]] if plan.base else None
        inputs = [ckpts[ref] for ref, _ in plan.inputs]
        align = None
        if setup.tokenizer is not None and setup.tokenizer.alignment is not None and is_vocab_tensor(name):
            align = _aligner(setup.tokenizer, [ref for ref, _ in plan.sources], ckpts, plan)
        compute_dtype = compute_dtype_for(config, [ckpts[ref].info(n).dtype for ref, n in plan.sources])
        job = _Job(
            name, base, inputs, method, plan.model_params, plan.params,
            stream,
            device, compute_dtype, out_dtype or info.dtype,
            {id(ckpts[ref]): n for ref, n in plan.sources}, align,
        )  # fmt: skip
        rows = info.shape[0] if info.shape else 0
        row_bytes = info.nbytes // rows * compute_dtype.itemsize // info.dtype.itemsize if rows else 0
        big = align is None and rows > 1 and rows * row_bytes > 2 * CHUNK_BYTES
        rows_per = max(1, CHUNK_BYTES // max(row_bytes, 1))
        if big and method.elementwise(plan.model_params, plan.params):
            yield name, RowChunks(info.shape, job.target, job.chunks(rows, rows_per, done))
        # Streamed forms work on whole rows (DELLA ranks within a row): 2-D tensors and up only.
        elif big and len(info.shape) >= 2 and method.stream is not None and not (
            compute_dtype.itemsize == 2 and rows * row_bytes <= HALF_WHOLE_BYTES
        ):
            numel = info.nbytes // info.dtype.itemsize
            if stream is not None:
                drawing.append(name)
            yield name, RowChunks(info.shape, job.target, job.streamed(rows, rows_per, numel, done))
        else:
            merged = job.run()
            done()  # before the yield: the consumer may never ask for a next tensor
            yield name, merged


def merge_tensors(
    config: MergeConfig,
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    checkpoints: Mapping[str, Checkpoint] | None = None,
    progress: Callable[[int, int], None] | None = None,
    seed: int = 0,
    allow_pickle: bool = False,
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield the merged model's tensors by HF name, one at a time, without touching disk (the consumer decides:
    the exporter writes them, a serving backend loads them in place).

    It validates compatibility before the first tensor and raises `MergeError` naming tensor and file (NaN/Inf
    inputs included). `dtype` is the output dtype (default: the config's `out_dtype`, else its `dtype`, else
    each tensor's own); compute is in mergekit's dtype (`compute_dtype_for`: the config's `dtype`, else the
    inputs'), unless the config's own `compute_dtype` asks for another (float32 for precision). `seed` seeds the
    random methods' (DARE, DELLA) one stream as mergekit's `--random-seed` does, and the tensors come in mergekit's
    order for them, so the same seed gives mergekit's masks."""
    for name, tensor in _merge_stream(
        config, device=device, dtype=dtype, checkpoints=checkpoints, progress=progress, seed=seed,
        allow_pickle=allow_pickle,
    ):  # fmt: skip
        yield name, tensor.materialize(device) if isinstance(tensor, RowChunks) else tensor
