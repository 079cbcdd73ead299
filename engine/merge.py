"""The streaming merge: one iterator of `(name, tensor)`, read and merged one tensor at a time.

It feeds the exporter (`engine.export`) and the serving backends (in-place weight reload) alike; peak memory is
the handful of input tensors for one weight name, never whole models.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping

import torch

from engine.checkpoint import Checkpoint, open_checkpoint
from engine.config import MergeConfig
from engine.errors import MergeError

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


def open_all(
    config: MergeConfig, checkpoints: Mapping[str, Checkpoint] | None = None
) -> dict[str, Checkpoint]:
    opened = dict(checkpoints or {})
    for ref in config.refs():
        if ref not in opened:
            opened[ref] = open_checkpoint(ref)
    return opened


def check_compatible(config: MergeConfig, ckpts: Mapping[str, Checkpoint]) -> list[str]:
    """Names to merge, in the reference model's order. Raises MergeError for anything that does not line up:
    a missing tensor, a tensor only some models have, a shape mismatch (vocab included)."""
    refs = config.refs()
    reference = ckpts[refs[0]]
    names = reference.tensor_names()
    ref_set = set(names)
    ref_vocab = reference.config.get("vocab_size")
    for ref in refs[1:]:
        other = ckpts[ref]
        vocab = other.config.get("vocab_size")
        if ref_vocab is not None and vocab is not None and vocab != ref_vocab:
            raise MergeError(
                f"vocab size differs: {reference.path} has {ref_vocab}, {other.path} has {vocab} "
                "(config.json vocab_size)"
            )
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
            a, b = reference.info(name), other.info(name)
            if a.shape != b.shape:
                raise MergeError(
                    f"shape mismatch for tensor {name}: {list(a.shape)} in {a.file} vs {list(b.shape)} in {b.file}"
                )
    return names


def _generator(seed: int, name: str, device: torch.device | str) -> torch.Generator:
    # Seeded per tensor name, so a random method's output does not depend on the order tensors are merged in.
    digest = int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little")
    gen = torch.Generator(device=device)
    gen.manual_seed(digest & 0x7FFF_FFFF_FFFF_FFFF)
    return gen


def _read(ckpt: Checkpoint, name: str, device: str | torch.device, dtype: torch.dtype) -> torch.Tensor:
    tensor = ckpt.get(name, device=device).to(dtype)
    if not torch.isfinite(tensor).all():
        raise MergeError(f"tensor {name} in {ckpt.info(name).file} contains NaN or Inf")
    return tensor


def merge_tensors(
    config: MergeConfig,
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    checkpoints: Mapping[str, Checkpoint] | None = None,
    progress: Callable[[int, int], None] | None = None,
    seed: int = 0,
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield the merged model's tensors by HF name. `dtype` is the output dtype (default: the config's
    `out_dtype`, else its `dtype`, else each tensor's dtype in the reference model); compute is in the config's
    `dtype` (float32 when unset)."""
    ckpts = open_all(config, checkpoints)
    names = check_compatible(config, ckpts)
    refs = config.refs()
    reference = ckpts[refs[0]]
    base = ckpts[config.base_model] if config.base_model else None
    inputs = [ckpts[r] for r in config.input_models()]
    method = config.method
    compute_dtype = parse_dtype(config.dtype) or torch.float32
    if isinstance(dtype, str):
        dtype = parse_dtype(dtype)
    out_dtype = dtype or parse_dtype(config.out_dtype) or parse_dtype(config.dtype)
    num_layers = reference.num_layers
    total = len(names)
    for i, name in enumerate(names):
        info = reference.info(name)
        if not info.dtype.is_floating_point:
            # Integer buffers (position ids and the like) are not merged: they must agree, and the reference's is used.
            yield name, reference.get(name, device=device)
            continue
        model_params, params = config.params_for(name, num_layers)
        base_tensor = _read(base, name, device, compute_dtype) if base is not None else None
        tensors = [_read(c, name, device, compute_dtype) for c in inputs]
        generator = _generator(seed, name, device) if method.random else None
        try:
            merged = method.fn(base_tensor, tensors, model_params, params, generator)
        except MergeError:
            raise
        except Exception as exc:
            raise MergeError(f"{config.merge_method} failed on tensor {name}: {exc}") from exc
        yield name, merged.to(out_dtype or info.dtype)
        if progress is not None:
            progress(i + 1, total)
