"""vLLM worker extension: builds a variant's weights inside the worker process and reloads them in place.

vLLM mixes this class into its worker (`LLM(worker_extension_cls="engine.backends.vllm_worker.MergeWorkerExtension")`),
so `self` below is the worker: `self.device` is the engine's device and `self.reload_weights(weights_iterator=...)`
loads HF-named tensors into the running model (vLLM fuses qkv / gate_up itself). Only small control data crosses
the process boundary (a YAML string, a path); the tensors are computed where they are used.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator
from typing import Any

import torch

# vLLM's in-place reload warns "<Layer>: Failed to load weights" for layers that hold only derived buffers and no
# checkpoint tensor (rotary embeddings' cos/sin cache): it puts their tensors back as they were, which is what we
# want. One such line per layer per swap would drown the sweep's progress lines, so only those are dropped.
_BUFFER_ONLY_LAYERS = ("RotaryEmbedding",)


class _QuietBufferOnlyReload(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "%s: Failed to load weights" and record.args:
            return not str(record.args[0]).endswith(_BUFFER_ONLY_LAYERS)
        return True


def _quiet_reload_logs() -> None:
    logger = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
    if not any(isinstance(f, _QuietBufferOnlyReload) for f in logger.filters):
        logger.addFilter(_QuietBufferOnlyReload())


def _primed(tensors: Iterator[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
    """Pull the first tensor before vLLM starts reloading: the merge validates every input (missing tensors, shape
    mismatches) before its first tensor, so bad input fails while the served weights are still untouched."""
    try:
        first = next(tensors)
    except StopIteration:
        raise ValueError("the variant has no tensors") from None
    return itertools.chain([first], tensors)


class MergeWorkerExtension:
    """Methods vLLM adds to each worker; called through `llm.collective_rpc(name, args=...)`."""

    def _mergescope_checkpoints(self) -> Any:
        from engine.backends.ckpt_cache import CheckpointCache

        # Lives as long as the worker: later swaps of the same checkpoints reuse the open handles.
        return self.__dict__.setdefault("_mergescope_cache", CheckpointCache())

    def _mergescope_dtype(self) -> Any:
        # Hand vLLM tensors already in the served dtype (e.g. bfloat16 on CPU): no per-tensor cast warnings, and
        # half the memory traffic for a float32 checkpoint.
        return self.model_runner.model_config.dtype

    def _mergescope_reload(self, tensors: Iterator[tuple[str, torch.Tensor]]) -> None:
        _quiet_reload_logs()
        # A failure after the reload began (a NaN in a later tensor, a vanished file) leaves the model half
        # loaded; the backend then marks the served weights unknown and the next swap reloads every tensor.
        self.reload_weights(weights_iterator=_primed(tensors))

    def mergescope_load_checkpoint(self, ref: str) -> dict[str, float]:
        """Reload the served weights from one checkpoint as is (the start model, or a reference model)."""
        start = time.perf_counter()
        ckpt = self._mergescope_checkpoints().get(ref)
        names = ckpt.tensor_names()
        dtype = self._mergescope_dtype()
        self._mergescope_reload((name, ckpt.get(name, device=self.device).to(dtype)) for name in names)
        return {"tensors": float(len(names)), "seconds": time.perf_counter() - start}

    def mergescope_load_merge(self, config_yaml: str) -> dict[str, float]:
        """Reload the served weights from a merge config (mergekit YAML), merged tensor by tensor on this device."""
        from engine.backends.base import config_refs
        from engine.config import load_config
        from engine.merge import merge_tensors

        start = time.perf_counter()
        config = load_config(config_yaml)
        dtype = self._mergescope_dtype()
        checkpoints = self._mergescope_checkpoints().for_refs(config_refs(config_yaml))
        count = 0

        def counted() -> Iterator[tuple[str, torch.Tensor]]:
            nonlocal count
            # Merge in the config's precision (float32 by default), cast to the served dtype only at the end.
            for name, tensor in merge_tensors(config, device=self.device, checkpoints=checkpoints):
                count += 1
                yield name, tensor.to(dtype)

        self._mergescope_reload(counted())
        return {"tensors": float(count), "seconds": time.perf_counter() - start}
