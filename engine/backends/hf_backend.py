"""The transformers backend: same interface as the vLLM one, for machines where vLLM cannot be installed.

The model is loaded once; a swap copies the merged tensor stream into the existing parameters in place (no new
model object, no disk write). Generation is batched per distinct settings, left-padded.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from engine.backends.base import (
    GenerationSettings,
    Messages,
    SwappingBackend,
    TokenPair,
    config_refs,
    single_checkpoint,
)
from engine.backends.ckpt_cache import CheckpointCache
from engine.errors import BackendError

if TYPE_CHECKING:
    from engine.config import MergeConfig

log = logging.getLogger(__name__)


class _PaddedLengthFilter(logging.Filter):
    """Drops transformers' "exceeded the model's predefined maximum length" reminder: a batch whose rows stop
    at their own budgets is longer than the context as a tensor, while no row runs past it (see `_generate`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "exceeded the model's predefined maximum length" not in record.getMessage()


logging.getLogger("transformers.generation.stopping_criteria").addFilter(_PaddedLengthFilter())


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _rows_done(width: int, budgets: list[int], device: torch.device) -> Any:
    """A stopping criterion: row i of a batch (prompts padded to `width`) is done after `budgets[i]` new tokens."""
    limits = torch.tensor(budgets, device=device)

    def done(input_ids: torch.Tensor, scores: torch.Tensor, **_: Any) -> torch.Tensor:
        return (input_ids.shape[1] - width) >= limits

    return done


class TransformersBackend(SwappingBackend):
    kind = "transformers"

    def __init__(
        self,
        start_model: str | Path,
        *,
        device: str | None = None,
        dtype: str | None = None,
        resident: str = "auto",
    ) -> None:
        from engine.backends.machine import RESIDENT_MODES, serving_dtype
        from engine.backends.resident import ResidentSet
        from engine.prompt_fit import context_limit

        super().__init__(start_model)
        self._checkpoints = CheckpointCache()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = torch.device(device if device not in (None, "auto") else _default_device())
        if resident not in RESIDENT_MODES:
            raise BackendError(f"resident swaps {resident!r}: choose one of {', '.join(RESIDENT_MODES)}")
        self._resident = ResidentSet(self.device, resident)
        # float32 on a CPU without native bf16 (emulated bf16 matmuls are slow); see engine.backends.machine.
        self.dtype = serving_dtype(dtype, self.start_model, device=self.device.type)
        torch_dtype: Any = getattr(torch, self.dtype)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.start_model, trust_remote_code=False)
            self.model = AutoModelForCausalLM.from_pretrained(
                self.start_model, dtype=torch_dtype, trust_remote_code=False, use_safetensors=True
            ).to(self.device)
        except Exception as exc:
            raise BackendError(f"cannot load {self.start_model} with transformers: {exc}") from exc
        self.model.eval()
        self.tokenizer.padding_side = "left"  # decoder-only batches must be left-padded
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._max_length = context_limit(self.start_model)
        # Rotary position embeddings (Llama, Mistral, Qwen, Gemma, Phi-3...) are computed per position, with no
        # table to run off: rows of one batch may then stop at different lengths (see `_generate`).
        config = self.model.config
        self._rotary = bool(getattr(config, "rope_parameters", None) or getattr(config, "rope_theta", None))
        self._params = dict(self.model.named_parameters())
        # Tied weights (lm_head = embed_tokens) appear under one name only in a checkpoint.
        self._tied = {
            name for name in self.model.state_dict() if name not in self._params and name.endswith(".weight")
        }

    @property
    def resident_mode(self) -> str:
        """auto / on / off: whether swaps merge from resident inputs (settable between swaps)."""
        return self._resident.mode

    @resident_mode.setter
    def resident_mode(self, mode: str) -> None:
        from engine.backends.machine import RESIDENT_MODES

        if mode not in RESIDENT_MODES:
            raise BackendError(f"resident swaps {mode!r}: choose one of {', '.join(RESIDENT_MODES)}")
        self._resident.mode = mode

    # --- swaps -------------------------------------------------------------------------------------------------
    def _tensor_stream(self, variant: MergeConfig | None) -> Iterator[tuple[str, torch.Tensor]]:
        path = self.start_model if variant is None else single_checkpoint(variant)
        if path is not None:
            ckpt = self._checkpoints.get(path)
            return ((name, ckpt.get(name, device=self.device)) for name in ckpt.tensor_names())
        from engine.merge import merge_tensors

        checkpoints = self._checkpoints.for_refs(config_refs(variant))
        inputs = self._resident.for_config(variant, checkpoints)
        swap_path = "streaming" if inputs is None else "resident"
        if swap_path != self.swap_path:
            log.info("transformers weight swaps: %s path (%s)", swap_path, self._resident.last_reason)
        self.swap_path, self.swap_reason = swap_path, self._resident.last_reason
        return merge_tensors(variant, device=self.device, checkpoints=inputs or checkpoints)

    @torch.no_grad()
    def _load(self, variant: MergeConfig | None) -> None:
        seen: set[str] = set()
        for name, tensor in self._tensor_stream(variant):
            param = self._params.get(name)
            if param is None:
                if name in self._tied:
                    continue
                raise BackendError(f"tensor {name} of the variant has no parameter in the served model")
            if tuple(param.shape) != tuple(tensor.shape):
                raise BackendError(
                    f"tensor {name}: shape {tuple(tensor.shape)} does not fit the served model's {tuple(param.shape)}"
                )
            param.copy_(tensor)
            seen.add(name)
        missing = sorted(set(self._params) - seen)
        if missing:
            raise BackendError(
                f"the variant lacks {len(missing)} tensor(s) of the served model, e.g. {missing[0]}"
            )

    def write_bound_s(self, ref: str | Path | None = None) -> float:
        """Seconds to write a model-sized set of served tensors once on this device (a swap's bandwidth bound)."""
        from engine.backends.resident import write_bound_s

        ckpt = self._checkpoints.get(ref or self.start_model)
        sources = [ckpt.get(name, device=self.device) for name in ckpt.tensor_names()]
        return write_bound_s(sources, getattr(torch, self.dtype))

    # --- generation --------------------------------------------------------------------------------------------
    def _encode(self, prompts: list[Messages]) -> dict[str, torch.Tensor]:
        texts = [
            self.tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts
        ]
        # The chat template already wrote any BOS it wants.
        batch = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        # A prompt past the model's context would fail deep in the model (or try to allocate its attention for a
        # million tokens): refuse it by size first, as vLLM does with max_model_len (room for one reply token).
        length = int(batch["input_ids"].shape[1])
        if length >= self.max_length:
            raise BackendError(
                f"prompt too long: {length} tokens leave no room for a reply in the model's context of "
                f"{self.max_length} tokens (max_position_embeddings)"
            )
        return {k: v.to(self.device) for k, v in batch.items()}

    def _generate_kwargs(self, settings: GenerationSettings, prompt_len: int) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            # Prompt and reply share the context: the reply stops where it ends, as vLLM's does.
            "max_new_tokens": min(settings.max_tokens, self.max_length - prompt_len),
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if settings.temperature > 0:
            kwargs.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kwargs

    @torch.no_grad()
    def _generate(self, prompts: list[Messages], settings: list[GenerationSettings]) -> list[str]:
        """One batched `generate` per distinct setting. A reply stops where the context ends (prompt + reply =
        max_length, as vLLM's): with rotary positions (each row's positions count from its own first token) row by
        row, each at its own budget; else the whole batch at the longest prompt's."""
        from transformers import StoppingCriteriaList

        from engine.prompt_fit import fit_max_tokens

        replies: list[str] = [""] * len(prompts)
        groups: dict[GenerationSettings, list[int]] = {}
        for index, s in enumerate(settings):
            groups.setdefault(s, []).append(index)
        for s, indices in groups.items():
            batch = self._encode([prompts[i] for i in indices])
            width = int(batch["input_ids"].shape[1])
            lengths = [int(n) for n in batch["attention_mask"].sum(dim=1)]
            # Each row's own budget: max_tokens, within the context its own prompt leaves (never None here:
            # `_encode` refused a batch with a prompt that leaves no room).
            budgets = fit_max_tokens(lengths, s.max_tokens, self.max_length)
            kwargs = self._generate_kwargs(s, width)
            if self._rotary:
                kwargs["max_new_tokens"] = max(budgets)
                if len(set(budgets)) > 1:
                    kwargs["stopping_criteria"] = StoppingCriteriaList(
                        [_rows_done(width, budgets, self.device)]
                    )
            torch.manual_seed(s.seed)
            try:
                out = self.model.generate(**batch, **kwargs)
            except Exception as exc:
                raise BackendError(f"transformers generation failed: {exc}") from exc
            new_tokens = out[:, width:]
            rows = [new_tokens[row, :budget] for row, budget in enumerate(budgets)]
            for i, text in zip(
                indices, self.tokenizer.batch_decode(rows, skip_special_tokens=True), strict=True
            ):
                replies[i] = text
        return replies

    def _stream(self, messages: Messages, settings: GenerationSettings) -> Iterator[str]:
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        batch = self._encode([messages])
        torch.manual_seed(settings.seed)
        failure: list[BaseException] = []
        stop = threading.Event()

        def stop_requested(input_ids: torch.Tensor, scores: torch.Tensor, **_: Any) -> torch.Tensor:
            return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device)

        def run() -> None:
            try:
                with torch.no_grad():
                    self.model.generate(
                        **batch,
                        **self._generate_kwargs(settings, batch["input_ids"].shape[1]),
                        streamer=streamer,
                        stopping_criteria=StoppingCriteriaList([stop_requested]),
                    )
            except BaseException as exc:  # surfaced to the consumer below
                failure.append(exc)
                streamer.end()

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        text = ""
        try:
            for piece in streamer:
                text += piece
                if piece:
                    yield text
        finally:
            # Also when the consumer stops early: end generation before the lock is released, so no swap can
            # land under a running generate.
            stop.set()
            worker.join()
        if failure:
            raise BackendError(f"transformers generation failed: {failure[0]}")

    # --- raw-text scoring (lm-eval bridge) -----------------------------------------------------------------------
    @property
    def max_length(self) -> int:
        """Tokens one sequence may hold: the model's positions, capped as vLLM's max_model_len is
        (`engine.prompt_fit.context_limit`), so both backends cut replies alike."""
        return self._max_length

    @torch.no_grad()
    def _loglikelihood(self, requests: list[TokenPair], batch_size: int = 16) -> list[tuple[float, bool]]:
        """A forward pass over context + continuation (right-padded batches); the continuation's tokens are read
        off the log-softmax at the positions that predict them."""
        results: list[tuple[float, bool]] = []
        for start in range(0, len(requests), batch_size):
            chunk = requests[start : start + batch_size]
            inputs = [(ctx + cont)[:-1] for ctx, cont in chunk]
            width = max(len(x) for x in inputs)
            ids = torch.full((len(chunk), width), self.tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, seq in enumerate(inputs):
                ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
            try:
                logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
            except Exception as exc:
                raise BackendError(f"transformers log-likelihood scoring failed: {exc}") from exc
            logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
            for row, (ctx, cont) in enumerate(chunk):
                # Position p predicts token p + 1: the continuation is predicted from len(ctx) - 1 on.
                rows = logprobs[row, len(ctx) - 1 : len(ctx) - 1 + len(cont)]
                target = torch.tensor(cont)
                picked = rows.gather(1, target[:, None]).squeeze(1)
                results.append((float(picked.sum()), bool((rows.argmax(dim=-1) == target).all())))
        return results

    @torch.no_grad()
    def _complete(
        self, prompts: list[list[int]], settings: list[GenerationSettings], stops: list[list[str]]
    ) -> list[str]:
        # Stop strings are applied by the caller (`complete` cuts at the first one); greedy output is the same as
        # stopping early, only the extra tokens cost time.
        replies: list[str] = [""] * len(prompts)
        groups: dict[GenerationSettings, list[int]] = {}
        for index, s in enumerate(settings):
            groups.setdefault(s, []).append(index)
        for s, indices in groups.items():
            width = max(len(prompts[i]) for i in indices)
            ids = torch.full((len(indices), width), self.tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(indices), width), dtype=torch.long)
            for row, i in enumerate(indices):  # left-padded, as decoder-only generation needs
                ids[row, width - len(prompts[i]) :] = torch.tensor(prompts[i])
                mask[row, width - len(prompts[i]) :] = 1
            torch.manual_seed(s.seed)
            try:
                out = self.model.generate(
                    input_ids=ids.to(self.device),
                    attention_mask=mask.to(self.device),
                    **self._generate_kwargs(s, width),
                )
            except Exception as exc:
                raise BackendError(f"transformers generation failed: {exc}") from exc
            texts = self.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
            for i, text in zip(indices, texts, strict=True):
                replies[i] = text
        return replies

    def _close(self) -> None:
        self.__dict__.pop("model", None)
        self._params = {}
