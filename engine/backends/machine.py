"""What the machine can do, and the serving choices that follow from it: the dtype and the backend.

Pure decisions over small facts (CPU flags, whether a GPU is there, the checkpoint's dtype), so they can be made
before any engine starts — the results store keys on the serving dtype, and a sweep whose results are all stored
never starts an engine.

- dtype: a CPU without native bf16/fp16 arithmetic (no AVX-512-BF16, no AMX) emulates bfloat16 in software:
  measured here, 300 prompts x 16 tokens took 2.4 s in bfloat16 and 0.65 s in float32 on the same vLLM engine.
  So such a CPU serves float32; a GPU, or a CPU with AVX-512-BF16 / AMX-BF16, serves the checkpoint's own dtype
  (bfloat16 for a float32 checkpoint: half the memory traffic, same kernels).
- backend: vLLM wherever a GPU is present (batched paged attention, tensor parallel); on a CPU-only machine the
  transformers backend (measured here on the demo family: a whole sweep 26 s against 128 s with vLLM).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from engine.errors import BackendError

SERVING_DTYPES = ("auto", "float32", "bfloat16", "float16")
# Resident swap inputs (engine.backends.resident): when they fit / always / never.
RESIDENT_MODES = ("auto", "on", "off")
_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class Machine:
    """The facts the serving choices depend on."""

    gpu: bool
    cpu_flags: frozenset[str]

    @property
    def native_bf16_cpu(self) -> bool:
        return any(flag in self.cpu_flags for flag in _NATIVE_BF16_FLAGS)


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The feature flags of /proc/cpuinfo text (the first processor's `flags` line)."""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


@functools.lru_cache(maxsize=1)
def this_machine() -> Machine:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    try:
        import torch

        gpu = bool(torch.cuda.is_available())
    except Exception:
        gpu = False
    return Machine(gpu=gpu, cpu_flags=cpu_flags(text))


def checkpoint_dtype(model: str | Path) -> str:
    """The dtype config.json declares (`torch_dtype`, or transformers 5's `dtype`); float32 when absent."""
    try:
        config = json.loads((Path(model) / "config.json").read_text())
    except (OSError, ValueError):
        return "float32"
    value = str(config.get("dtype") or config.get("torch_dtype") or "float32").removeprefix("torch.")
    return value if value in SERVING_DTYPES else "float32"


def serving_dtype(requested: str | None, model: str | Path, machine: Machine | None = None, *,
                  device: str | None = None) -> str:  # fmt: skip
    """The dtype to serve `model` in: `requested` unless None/"auto"; else float32 on a CPU without native
    bf16 support, the checkpoint's dtype on a GPU or a bf16-capable CPU (bfloat16 for a float32 checkpoint
    there). `device` "cpu" forces the CPU rule on a GPU machine."""
    if requested not in (None, "auto"):
        if requested not in SERVING_DTYPES:
            raise BackendError(f"--dtype {requested!r}: choose one of {', '.join(SERVING_DTYPES)}")
        return requested
    machine = machine or this_machine()
    on_gpu = machine.gpu and (device is None or device in ("auto", "cuda") or str(device).startswith("cuda"))
    if not on_gpu and not machine.native_bf16_cpu:
        return "float32"
    own = checkpoint_dtype(model)
    return "bfloat16" if own == "float32" else own


def auto_backend(
    machine: Machine | None = None, *, vllm_importable: bool = True, device: str | None = None
) -> str:
    """The backend `--backend auto` starts: vLLM where a GPU serves (and vLLM imports), else transformers."""
    machine = machine or this_machine()
    on_gpu = machine.gpu and device not in ("cpu",)
    return "vllm" if on_gpu and vllm_importable else "transformers"


def cpu_rank_binding(cpus: list[int], ranks: int) -> str:
    """vLLM's VLLM_CPU_OMP_THREADS_BIND for an engine of `ranks` CPU ranks (tensor parallel): the CPUs cut into
    `ranks` disjoint equal slices, in order, one per rank ('0|1', '0,1|2,3'); what does not divide evenly is left
    to the scheduler process. vLLM's own automatic binding wants a NUMA node per rank and fails on one-node
    machines."""
    per_rank = len(cpus) // ranks
    if per_rank < 1:
        raise BackendError(
            f"{ranks} CPU ranks need at least {ranks} CPUs (one per rank); this process may use {len(cpus)}"
        )
    return "|".join(",".join(str(c) for c in cpus[i * per_rank : (i + 1) * per_rank]) for i in range(ranks))
