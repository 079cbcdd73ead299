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

# Two kinds of vLLM warnings are expected here and would drown the sweep's progress lines:
# - the in-place reload's "<Layer>: Failed to load weights" for layers that hold only derived buffers and no
#   checkpoint tensor (rotary embeddings' cos/sin cache): vLLM puts their tensors back as they were, as wanted;
# - "Attempted to load weight X with dtype torch.float32 into parameter with dtype torch.bfloat16", once per
#   tensor at engine start, when vLLM serves a float32 checkpoint in bfloat16 (its CPU default).
# Only those records are dropped; every other warning passes.
_BUFFER_ONLY_LAYERS = ("RotaryEmbedding",)


class _QuietExpected(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if record.msg == "%s: Failed to load weights" and args:
            return not str(args[0]).endswith(_BUFFER_ONLY_LAYERS)
        if str(record.msg).startswith("Attempted to load weight %s with dtype") and len(args) == 3:
            return not (str(args[1]) == "torch.float32" and str(args[2]) in ("torch.bfloat16", "torch.float16"))
        return True


def _quiet_expected_logs() -> None:
    for name in ("vllm.model_executor.model_loader.reload.layerwise", "vllm.model_executor.models.utils"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _QuietExpected) for f in logger.filters):
            logger.addFilter(_QuietExpected())


# vLLM imports this module in each worker before it loads the model, so the start-up warnings are covered too.
_quiet_expected_logs()


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

    def _mergescope_resident(self, mode: str) -> Any:
        from engine.backends.resident import ResidentSet

        resident = self.__dict__.get("_mergescope_resident_set")
        if resident is None or resident.mode != mode:
            resident = self.__dict__["_mergescope_resident_set"] = ResidentSet(self.device, mode)
        return resident

    def _mergescope_direct(self, mode: str) -> Any:
        from engine.backends.served import DirectSwaps

        direct = self.__dict__.get("_mergescope_direct_swaps")
        if direct is None:
            model = self.model_runner.get_model()
            direct = self.__dict__["_mergescope_direct_swaps"] = DirectSwaps(model, self.device, self.vllm_config)
        direct.mode = mode
        return direct

    def mergescope_load_merge(self, config_yaml: str, resident_mode: str = "auto") -> dict[str, Any]:
        """Swap the served weights to a merge config (mergekit YAML), on this device. Three paths, the first that
        applies: `direct` (the inputs resident in the served layout, one fused pass written into the served
        parameters: `engine.backends.served`), `resident` (the inputs resident, merged tensors through vLLM's
        `reload_weights`), `streaming` (read from disk, through `reload_weights`); `resident_mode` auto/on/off
        governs the first two. Returns the path taken and why, with its timings."""
        from vllm.config import set_current_vllm_config

        from engine.backends.base import config_refs
        from engine.config import load_config
        from engine.merge import merge_tensors

        start = time.perf_counter()
        config = load_config(config_yaml)
        dtype = self._mergescope_dtype()
        checkpoints = self._mergescope_checkpoints().for_refs(config_refs(config_yaml))
        direct = self._mergescope_direct(resident_mode)
        resident = self._mergescope_resident(resident_mode)
        with set_current_vllm_config(self.vllm_config):
            timings = direct.swap(config, checkpoints)
        if timings is not None:
            resident.clear()  # one resident set at a time
            return {
                "path": "direct",
                "reason": direct.last_reason,
                "resident_bytes": float(direct.nbytes),
                "tensors": float(len(direct.targets())),
                **timings,
                "seconds": time.perf_counter() - start,
            }
        inputs = resident.for_config(config, checkpoints)
        path = "streaming" if inputs is None else "resident"
        reason = resident.last_reason if inputs is not None else f"{direct.last_reason}; {resident.last_reason}"
        ready = time.perf_counter()
        count = 0

        def counted() -> Iterator[tuple[str, torch.Tensor]]:
            nonlocal count
            # Merge in the config's precision (float32 by default), cast to the served dtype only at the end.
            for name, tensor in merge_tensors(config, device=self.device, checkpoints=inputs or checkpoints):
                count += 1
                yield name, tensor.to(dtype)

        self._mergescope_reload(counted())
        end = time.perf_counter()
        return {
            "path": path,
            "reason": reason,
            "resident_bytes": float(resident.nbytes),
            "tensors": float(count),
            "prepare_s": ready - start,
            "seconds": end - start,
        }

    def mergescope_served_digests(self) -> dict[str, str]:
        """A hash of every weight this rank serves, by name (packed CPU weights read back from their packed copy):
        two loads that serve the very same weights give the same hashes."""
        from engine.backends.served import served_digests

        return served_digests(self.model_runner.get_model())

    def mergescope_write_bound(self, ref: str) -> dict[str, float]:
        """The memory-bandwidth bound of a swap on this device: seconds to write checkpoint `ref`'s tensors once in
        the served dtype (`engine.backends.resident.write_bound_s`)."""
        from engine.backends.resident import write_bound_s

        ckpt = self._mergescope_checkpoints().get(ref)
        dtype = self._mergescope_dtype()
        sources = [ckpt.get(name, device=self.device) for name in ckpt.tensor_names()]
        nbytes = sum(t.numel() * dtype.itemsize for t in sources)
        return {"seconds": write_bound_s(sources, dtype), "bytes": float(nbytes)}
