"""Resident swap inputs: the checkpoints a sweep merges, held in the engine device's memory between swaps.

A sweep swaps many variants of the same few checkpoints (θ_pre, θ_G, each θ_Dk). The streaming path re-reads
them from disk for every variant; the resident path reads each once into device memory, in its own dtype (the
precision that keeps the merge exact: the merge upcasts to its compute dtype exactly as it does from disk), and
every later swap merges from memory.

A resident checkpoint is a `Checkpoint` whose tensors are already in memory, so the very same merge code
(`engine.merge.merge_tensors`, same row chunks, same operation order) computes the variant: the result is
bit-identical to the streaming path and to the exported checkpoint. Methods qualify when their merge is a linear
combination of the inputs (linear, task arithmetic; TIES/DARE/... at density 1 without sign election), whose
implementations only read their inputs — a resident tensor must never be written to.

Whether the inputs fit is decided against the engine device's free memory (CUDA's free memory on a GPU,
MemAvailable on a CPU) with a safety margin; when they do not, the caller streams as before.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from engine.backends.machine import RESIDENT_MODES
from engine.checkpoint import Checkpoint, TensorInfo

if TYPE_CHECKING:
    from engine.config import MergeConfig

log = logging.getLogger(__name__)

# Leave this share of the device's free memory (and at least 1 GiB) untouched: generation and the merge's own
# scratch need room, and other processes share a CPU machine's memory.
FREE_SHARE = 0.6
MIN_HEADROOM = 2**30


class ResidentCheckpoint(Checkpoint):
    """A checkpoint read whole into memory on `device`; `get` / `get_rows` return views (no copy, no disk)."""

    def __init__(self, source: Checkpoint, device: str | torch.device = "cpu") -> None:  # noqa: D107
        # Not Checkpoint.__init__: no files are opened; the metadata is the source's.
        self.path = source.path
        self.name = source.name
        self.config = source.config
        self.metadata = source.metadata
        self._handles = {}
        self.device = torch.device(device)
        self._tensors = {n: source.get(n, device=self.device) for n in source.tensor_names()}
        self._infos = {
            n: TensorInfo(tuple(t.shape), t.dtype, source.info(n).file, -1, t.numel() * t.element_size())
            for n, t in self._tensors.items()
        }
        self._pickled = self._tensors  # Checkpoint.get/get_rows serve offset<0 tensors from this dict
        self.source = source

    def identity(self) -> str:
        return self.source.identity()

    @property
    def nbytes(self) -> int:
        return sum(info.nbytes for info in self._infos.values())


def resident_reason(config: MergeConfig, checkpoints: Mapping[str, Checkpoint]) -> str | None:
    """None when `config`'s merge can run from resident inputs; else why not (for the log)."""
    if getattr(config, "slices", None):
        return "configs with slices stream"
    method = config.method
    if method.random:
        return f"{method.name} draws random masks"
    reference = checkpoints[config.refs()[0]]
    layers = reference.num_layers
    for name in reference.tensor_names():
        model_params, params = config.params_for(name, layers)
        if not method.linear(model_params, params):
            return f"{method.name} is not a linear combination of its inputs (tensor {name})"
    return None


def device_free_bytes(device: torch.device) -> int:
    """Free memory of the engine device: CUDA's free memory on a GPU, MemAvailable on a CPU."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def fits(needed: int, free: int) -> bool:
    """Whether `needed` more bytes fit in `free`, keeping the headroom."""
    return needed <= min(free * FREE_SHARE, free - MIN_HEADROOM)


def _ckpt_bytes(ckpt: Checkpoint) -> int:
    return sum(ckpt.info(n).nbytes for n in ckpt.tensor_names())


class ResidentSet:
    """The resident checkpoints of one engine, by reference; grown as configs need them, replaced when a config
    names other checkpoints (a new sweep family)."""

    def __init__(self, device: str | torch.device, mode: str = "auto") -> None:
        if mode not in RESIDENT_MODES:
            raise ValueError(f"resident mode {mode!r}: choose one of {', '.join(RESIDENT_MODES)}")
        self.device = torch.device(device)
        self.mode = mode
        self._resident: dict[str, ResidentCheckpoint] = {}
        self.last_reason = "no merge swapped yet"

    @property
    def nbytes(self) -> int:
        return sum(ckpt.nbytes for ckpt in self._resident.values())

    def for_config(
        self, config: MergeConfig, opened: Mapping[str, Checkpoint]
    ) -> dict[str, Checkpoint] | None:
        """Resident handles for every checkpoint `config` names, or None (stream instead; `last_reason` says
        why). `opened` are the on-disk handles of a `CheckpointCache`, which hands out a new handle when a
        folder's weight files change: a resident copy is reused only while its source handle is the same."""
        if self.mode == "off":
            self.last_reason = "resident swaps are off"
            return None
        reason = resident_reason(config, opened)
        if reason is not None:
            self.last_reason = reason
            return None
        refs = list(opened)
        keep = {r: c for r, c in self._resident.items() if r in opened and c.source is opened[r]}
        missing = [r for r in refs if r not in keep]
        needed = sum(_ckpt_bytes(opened[r]) for r in missing)
        # What this set holds and will not keep is freed before the new ones are read.
        dropped = self.nbytes - sum(c.nbytes for c in keep.values())
        if missing and self.mode == "auto" and not fits(needed, device_free_bytes(self.device) + dropped):
            self.last_reason = (
                f"the {len(refs)} checkpoints ({needed / 2**30:.2f} GiB to add) do not fit in free "
                f"{self.device.type} memory"
            )
            self._resident = keep
            return None
        self._resident = keep
        for ref in missing:
            self._resident[ref] = ResidentCheckpoint(opened[ref], self.device)
        self.last_reason = f"{len(refs)} checkpoints resident ({self.nbytes / 2**30:.2f} GiB)"
        return {ref: self._resident[ref] for ref in refs}

    def clear(self) -> None:
        self._resident.clear()


def write_bound_s(sources: list[torch.Tensor], dtype: torch.dtype, repeats: int = 3) -> float:
    """The memory-bandwidth bound of a swap on the tensors' device: the best of `repeats` timings of writing a
    model-sized set of tensors of the served `dtype` once (each source copied into a preallocated buffer)."""
    import time

    targets = [torch.empty(t.shape, dtype=dtype, device=t.device) for t in sources]
    best = float("inf")
    for _ in range(repeats):
        _sync(sources)
        begin = time.perf_counter()
        for target, source in zip(targets, sources, strict=True):
            target.copy_(source)
        _sync(sources)
        best = min(best, time.perf_counter() - begin)
    return best


def _sync(tensors: list[torch.Tensor]) -> None:
    if tensors and tensors[0].device.type == "cuda":
        torch.cuda.synchronize(tensors[0].device)
