"""Atomic export of a merged model: sharded safetensors streamed to disk, plus config, tokenizer and model card.

The output folder is written under a temporary name beside the destination and renamed at the end, so a failure
or Ctrl-C leaves neither the destination nor a stray temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from engine import fs
from engine.chat_template import resolve_chat_template
from engine.checkpoint import Checkpoint
from engine.config import MergeConfig
from engine.errors import MergeError, MergescopeWarning
from engine.merge import MergeSetup, RowChunks, _merge_stream, parse_dtype, precision_note, prepare_merge
from engine.plan import output_layers

TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "vocab.json",
    "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json",
)  # fmt: skip

_ST_DTYPE = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}  # fmt: skip


@dataclass(frozen=True)
class TensorSlot:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n * torch.empty((), dtype=self.dtype).element_size()


def plan_shards(slots: Sequence[TensorSlot], shard_size: int) -> list[list[TensorSlot]]:
    """Greedy split into shards of at most `shard_size` bytes (a larger single tensor gets its own shard)."""
    shards: list[list[TensorSlot]] = [[]]
    size = 0
    for slot in slots:
        if shards[-1] and size + slot.nbytes > shard_size:
            shards.append([])
            size = 0
        shards[-1].append(slot)
        size += slot.nbytes
    return shards


def _header(slots: Sequence[TensorSlot]) -> bytes:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for slot in slots:
        header[slot.name] = {
            "dtype": _ST_DTYPE[slot.dtype],
            "shape": list(slot.shape),
            "data_offsets": [offset, offset + slot.nbytes],
        }
        offset += slot.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # data must start 8-byte aligned
    return len(raw).to_bytes(8, "little") + raw


def _write_tensor(fh, tensor: torch.Tensor) -> int:
    """Write the tensor's bytes straight from its memory (no serialization copy); returns the byte count."""
    data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
    view = memoryview(data)
    done = 0
    while done < len(view):  # a raw write may be partial
        done += fh.write(view[done:])
    return done


class _BackgroundWriter:
    """Writes tensors to files on one helper thread, in submission order, while the caller merges the next ones
    (a write releases the GIL). At most `limit` bytes wait in the queue, so memory stays bounded."""

    def __init__(self, limit: int = 16 * 2**20) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mergescope-write")
        self.pending: deque[tuple[Future, int]] = deque()
        self.limit = limit
        self.queued = 0

    def submit(self, fh, tensor: torch.Tensor) -> int:
        size = tensor.numel() * tensor.element_size()
        while self.pending and self.queued + size > self.limit:
            self._wait_one()
        self.pending.append((self.pool.submit(_write_tensor, fh, tensor), size))
        self.queued += size
        return size

    def _wait_one(self) -> None:
        future, size = self.pending.popleft()
        self.queued -= size
        future.result()

    def drain(self, *, raise_errors: bool = True) -> None:
        while self.pending:
            try:
                self._wait_one()
            except Exception:
                if raise_errors:
                    raise

    def close(self) -> None:
        self.drain(raise_errors=False)
        self.pool.shutdown(wait=True)


def write_shards(
    tensors: Iterable[tuple[str, torch.Tensor]], slots: Sequence[TensorSlot], folder: Path, shard_size: int
) -> None:
    """Stream tensors (arriving in `slots` order) into safetensors shards whose headers are known up front."""
    shards = plan_shards(slots, shard_size)
    single = len(shards) == 1
    names = [
        "model.safetensors" if single else f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        for i in range(len(shards))
    ]
    stream = iter(tensors)
    weight_map: dict[str, str] = {}
    total = 0
    writer = _BackgroundWriter()
    try:
        for shard, fname in zip(shards, names, strict=True):
            with open(folder / fname, "wb", buffering=0) as fh:
                try:
                    fh.write(_header(shard))
                    for slot in shard:
                        name, tensor = next(stream)
                        if name != slot.name or tuple(tensor.shape) != slot.shape or tensor.dtype != slot.dtype:
                            raise MergeError(
                                f"tensor {name}: got {list(tensor.shape)} {tensor.dtype}, expected {slot.name} "
                                f"{list(slot.shape)} {slot.dtype}"
                            )
                        # A RowChunks tensor is written chunk by chunk as the chunks are merged.
                        parts = tensor.chunks if isinstance(tensor, RowChunks) else [tensor]
                        written = sum(writer.submit(fh, part) for part in parts)
                        if written != slot.nbytes:
                            raise MergeError(f"tensor {name}: {written} bytes written, {slot.nbytes} expected")
                        weight_map[name] = fname
                        total += slot.nbytes
                    writer.drain()  # the shard is complete before its file is closed
                finally:
                    writer.drain(raise_errors=False)  # never close a file a write is still using
    finally:
        writer.close()
    if not single:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def _model_card(
    config_yaml: str | None, card_extra: str | None, source: Checkpoint, tokenizer_note: str | None = None
) -> str:
    origin = tokenizer_note or f"Tokenizer and configuration from `{source.name}`."
    lines = [
        "---",
        "library_name: transformers",
        "tags: [merge, mergescope]",
        "---",
        "# Merged model",
        "",
        f"Made with mergescope. {origin}",
    ]
    if config_yaml:
        lines += ["", "## Merge configuration (mergekit YAML)", "", "```yaml", config_yaml.rstrip(), "```"]
    if card_extra:
        lines += ["", card_extra.rstrip()]
    return "\n".join(lines) + "\n"


def _set_config_value(config: dict, keys: tuple[str, ...], value: int) -> None:
    """Set the first of `keys` the config has (a VLM nests the language model's under text_config)."""
    for scope in (config, config.get("text_config")):
        if isinstance(scope, dict):
            for key in keys:
                if key in scope:
                    scope[key] = value
                    return
    config[keys[0]] = value


def _copy_support_files(
    source: Checkpoint,
    folder: Path,
    out_dtype: torch.dtype | None,
    chat_template: str | None,
    *,
    num_layers: int | None = None,
    tokenizer=None,
    vocab_size: int | None = None,
    tokenizer_folder: Path | None = None,
    head: bool = False,
) -> None:
    """config.json (with the output's dtype, layer count and vocabulary size; untied when the output has its own
    `lm_head.weight` (slices can take it from a later, untied source), else loaders would drop it), generation
    config, and the
    tokenizer: `tokenizer` (a built one) saved, else the files of `tokenizer_folder` (default: the source's)
    copied."""
    config = json.loads(json.dumps(source.config))  # deep copy: nested text_config may change
    if out_dtype is not None:
        name = str(out_dtype).removeprefix("torch.")
        config["torch_dtype"] = name
        if "dtype" in config:  # newer transformers write `dtype`
            config["dtype"] = name
    if num_layers is not None:
        _set_config_value(config, ("num_hidden_layers", "n_layer", "num_layers"), num_layers)
    if vocab_size is not None:
        _set_config_value(config, ("vocab_size",), vocab_size)
    for scope in (config, config.get("text_config")):
        if head and isinstance(scope, dict) and scope.get("tie_word_embeddings"):
            scope["tie_word_embeddings"] = False
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    src = source.path / "generation_config.json"
    if src.exists():
        shutil.copy2(src, folder / src.name)
    if tokenizer is None:
        for fname in TOKENIZER_FILES:
            src = (tokenizer_folder or source.path) / fname
            if src.exists():
                shutil.copy2(src, folder / fname)
    if tokenizer is not None:
        if chat_template:
            tokenizer.chat_template = chat_template
        tokenizer.save_pretrained(str(folder))
    if chat_template:
        # The config's template wins over the source's: written where transformers and vLLM look first.
        (folder / "chat_template.jinja").write_text(chat_template)
        tok_config = folder / "tokenizer_config.json"
        if tok_config.exists():
            data = json.loads(tok_config.read_text())
            data["chat_template"] = chat_template
            tok_config.write_text(json.dumps(data, indent=2))


class atomic_folder:
    """Context manager yielding a temporary folder beside `dest`, renamed to `dest` on success.

    It holds the output lock (`engine.fs.OutputLock`) from start to rename, so of two writers to one folder
    exactly one proceeds; under the lock it removes temporary folders a killed run left behind, and it gives
    the folder the mode the user's umask asks for (mkdtemp's is 0700)."""

    def __init__(self, dest: str | os.PathLike, overwrite: bool = False) -> None:
        self.dest = fs.resolve(dest, "--out")
        self.overwrite = overwrite
        self.lock = fs.OutputLock(self.dest)

    def __enter__(self) -> Path:
        parent = self.dest.parent
        with fs.os_errors(f"cannot write the output folder {self.dest}:", parent):
            parent.mkdir(parents=True, exist_ok=True)
        self.lock.__enter__()
        try:
            if self.dest.exists() and not self.overwrite:  # re-checked under the lock: a rival may have won
                raise MergeError(f"{self.dest}: already exists (pass --overwrite to replace it)")
            fs.remove_stale_temps(self.dest)
            with fs.os_errors(f"cannot write the output folder {self.dest}:", parent):
                self.tmp = Path(tempfile.mkdtemp(prefix=fs.temp_prefix(self.dest), dir=parent))
                fs.chmod_like_umask(self.tmp, folder=True)
        except BaseException:
            self.lock.__exit__()
            raise
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is not None:  # includes KeyboardInterrupt
                shutil.rmtree(self.tmp, ignore_errors=True)
                return
            try:
                with fs.os_errors(f"cannot write the output folder {self.dest}:", self.dest.parent):
                    if self.dest.exists():
                        trash = self.dest.with_name(f"{fs.trash_prefix(self.dest)}{os.getpid()}")
                        os.replace(self.dest, trash)
                        os.replace(self.tmp, self.dest)
                        shutil.rmtree(trash, ignore_errors=True)
                    else:
                        os.replace(self.tmp, self.dest)
            except BaseException:
                shutil.rmtree(self.tmp, ignore_errors=True)
                raise
        finally:
            self.lock.__exit__()


def _buffered_slots(
    tensors: Iterable[tuple[str, torch.Tensor]],
) -> tuple[Iterable[tuple[str, torch.Tensor]], list[TensorSlot]]:
    # Without a plan the headers are unknown until every tensor is seen: hold the stream (small models only).
    held = [(name, tensor.detach().to("cpu")) for name, tensor in tensors]
    return held, [TensorSlot(n, tuple(t.shape), t.dtype) for n, t in held]


def write_checkpoint(
    tensors: Iterable[tuple[str, torch.Tensor]],
    out_dir: str | os.PathLike,
    *,
    source: Checkpoint,
    slots: Sequence[TensorSlot] | None = None,
    config_yaml: str | None = None,
    card_extra: str | None = None,
    chat_template: str | None = None,
    shard_size: int = 2**30,
    overwrite: bool = False,
    support: dict | None = None,
) -> Path:
    """Write a loadable model folder (weights, config, tokenizer, generation config, card) atomically.
    `support` passes the output's layer count, vocabulary size, built tokenizer and a card note on to the
    config and tokenizer writer.

    With `slots` (every tensor's name, shape and dtype, in stream order) the stream is written as it arrives
    (constant memory); without, it is held in memory first."""
    folder = atomic_folder(out_dir, overwrite)
    with folder as tmp, fs.os_errors(f"cannot write the output folder {folder.dest}:", tmp):
        if slots is None:
            tensors, slots = _buffered_slots(tensors)
        write_shards(tensors, slots, tmp, shard_size)
        float_dtypes = {s.dtype for s in slots if s.dtype.is_floating_point}
        support = dict(support or {})
        note = support.pop("note", None)
        _copy_support_files(
            source, tmp, next(iter(float_dtypes)) if len(float_dtypes) == 1 else None, chat_template, **support,
            head="lm_head.weight" in {s.name for s in slots},
        )  # fmt: skip
        (tmp / "README.md").write_text(_model_card(config_yaml, card_extra, source, note))
        if config_yaml:
            (tmp / "mergekit_config.yml").write_text(config_yaml)
    return folder.dest


def donor(config: MergeConfig, ckpts: dict[str, Checkpoint]) -> Checkpoint:
    """Where config.json (and, without a tokenizer setting, the tokenizer) come from, as in mergekit: the base
    model, else the first model the config names."""
    return ckpts[config.base_model or config.refs()[0]]


def check_support_source(source: Checkpoint, *, explicit: bool, tokenizer: bool = True) -> None:
    """The merged folder's config.json (and, with `tokenizer`, its tokenizer) are copied from `source`: without a
    config.json nothing can load the result, so that is an error; a missing tokenizer is an error when the config
    named the source (`tokenizer_source`), else a warning (the output then has no tokenizer)."""
    if not (source.path / "config.json").is_file():
        raise MergeError(
            f"{source.path / 'config.json'}: missing; the merged model's config.json is copied from {source.name} "
            "(the base model, else the first model named, as in mergekit), and without it nothing can load the "
            "result"
        )
    if not tokenizer or any((source.path / f).is_file() for f in TOKENIZER_FILES):
        return
    message = f"{source.path}: no tokenizer files ({', '.join(TOKENIZER_FILES[:2])}, ...)"
    if explicit:
        raise MergeError(f"tokenizer_source: {message}; name a model that has a tokenizer")
    warnings.warn(
        f"{message}: the merged model gets no tokenizer (set tokenizer_source to a model that has one)",
        MergescopeWarning,
        stacklevel=2,
    )


def export_merge(
    config: MergeConfig,
    out_dir: str | os.PathLike,
    *,
    device: str = "cpu",
    dtype: str | None = None,
    shard_size: int = 2**30,
    overwrite: bool = False,
    card_extra: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    seed: int = 0,
    allow_pickle: bool = False,
) -> Path:
    """Merge per `config` and write the result to `out_dir` (atomic). Every input error (incompatible models,
    bad parameters, an unknown chat template, an output folder that is an input, an existing `out_dir`) is
    raised before anything is written."""
    out_path = fs.resolve(out_dir, "--out")
    if out_path.exists() and not overwrite:
        raise MergeError(f"{out_path}: already exists (pass --overwrite to replace it)")
    setup: MergeSetup = prepare_merge(config, allow_pickle=allow_pickle)
    ckpts = setup.ckpts
    spec = config.tokenizer.source if config.tokenizer else config.tokenizer_source
    fs.check_output_not_input(out_path, [*config.refs(), *([spec] if spec not in (None, "base", "union") else [])])
    out_dtype = parse_dtype(dtype) or parse_dtype(config.out_dtype) or parse_dtype(config.dtype)
    slots = []
    for plan in setup.plan:
        info = ckpts[plan.reference[0]].info(plan.reference[1])
        target = (out_dtype if info.dtype.is_floating_point else None) or info.dtype
        slots.append(TensorSlot(plan.name, setup.out_shape(plan), target))
    source = donor(config, ckpts)
    built = setup.tokenizer
    check_support_source(source, explicit=False, tokenizer=built is None)
    chat_template = resolve_chat_template(config.chat_template, [ckpts[r].path for r in config.refs()])
    note = None
    if built is not None:
        note = f"Configuration from `{source.name}`; tokenizer built from `{spec}` ({built.vocab_size} tokens)."
    support = {
        "num_layers": output_layers(config),
        "tokenizer": built.tokenizer if built else None,
        "tokenizer_folder": built.folder if built else None,
        "vocab_size": built.vocab_size if built else None,
        "note": note,
    }
    stream = _merge_stream(
        config, device=device, dtype=out_dtype, checkpoints=ckpts, progress=progress, seed=seed, setup=setup
    )
    return write_checkpoint(
        stream,
        out_dir,
        slots=slots,
        source=source,
        config_yaml=config.to_yaml(),
        card_extra="\n\n".join(filter(None, [precision_note(config), card_extra])),
        chat_template=chat_template,
        shard_size=shard_size,
        overwrite=overwrite,
        support=support,
    )
