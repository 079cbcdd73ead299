"""vLLM worker extension: builds a variant's weights inside the worker process and reloads them in place.

vLLM mixes this class into its worker (`LLM(worker_extension_cls="engine.backends.vllm_worker.MergeWorkerExtension")`),
so `self` below is the worker: `self.device` is the engine's device and `self.reload_weights(weights_iterator=...)`
loads HF-named tensors into the running model (vLLM fuses qkv / gate_up itself). Only small control data crosses
the process boundary (a YAML string, a path); the tensors are computed where they are used.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


def _signature(path: Path) -> tuple:
    """Cheap fingerprint of a checkpoint folder's weight files, so a cached handle is reused only while the files
    on disk are unchanged (a re-exported checkpoint under the same path gets opened afresh)."""
    files = sorted(path.glob("*.safetensors"))
    return tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files)


class MergeWorkerExtension:
    """Methods vLLM adds to each worker; called through `llm.collective_rpc(name, args=...)`."""

    def _mergescope_checkpoint(self, ref: str | os.PathLike) -> Any:
        from engine.checkpoint import open_checkpoint

        # Checkpoint handles (open safetensors files, parsed headers) live as long as the worker, so a swap reads
        # tensors, not headers.
        cache: dict[str, tuple[tuple, Any]] = self.__dict__.setdefault("_mergescope_ckpts", {})
        key = str(ref)
        path = Path(ref)
        signature = _signature(path) if path.is_dir() else ()
        hit = cache.get(key)
        if hit is not None and hit[0] == signature:
            return hit[1]
        ckpt = open_checkpoint(ref)
        cache[key] = (signature, ckpt)
        return ckpt

    def _mergescope_dtype(self) -> Any:
        # Hand vLLM tensors already in the served dtype (e.g. bfloat16 on CPU): no per-tensor cast warnings, and
        # half the memory traffic for a float32 checkpoint.
        return self.model_runner.model_config.dtype

    def mergescope_load_checkpoint(self, ref: str) -> dict[str, float]:
        """Reload the served weights from one checkpoint as is (the start model, or a reference model)."""
        start = time.perf_counter()
        ckpt = self._mergescope_checkpoint(ref)
        names = ckpt.tensor_names()
        dtype = self._mergescope_dtype()
        self.reload_weights(
            weights_iterator=((name, ckpt.get(name, device=self.device).to(dtype)) for name in names)
        )
        return {"tensors": float(len(names)), "seconds": time.perf_counter() - start}

    def mergescope_load_merge(self, config_yaml: str) -> dict[str, float]:
        """Reload the served weights from a merge config (mergekit YAML), merged tensor by tensor on this device."""
        from engine.backends.base import config_refs
        from engine.config import load_config
        from engine.merge import merge_tensors

        start = time.perf_counter()
        config = load_config(config_yaml)
        dtype = self._mergescope_dtype()
        checkpoints = {ref: self._mergescope_checkpoint(ref) for ref in config_refs(config_yaml)}
        count = 0

        def counted():
            nonlocal count
            # Merge in the config's precision (float32 by default), cast to the served dtype only at the end.
            for name, tensor in merge_tensors(config, device=self.device, checkpoints=checkpoints):
                count += 1
                yield name, tensor.to(dtype)

        self.reload_weights(weights_iterator=counted())
        return {"tensors": float(count), "seconds": time.perf_counter() - start}
