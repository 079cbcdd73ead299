"""An lm-evaluation-harness model class on our serving backends: lm-eval's tasks score the variant that is
swapped into the running engine, with no engine restart and no checkpoint on disk.

`MergescopeLM(backend, variant)` is an `lm_eval.api.model.TemplateLM` (an `LM`), registered with lm-eval as
`mergescope`. Tokenization follows lm-eval's own `hf` model (same special-token rule, same empty-context prefix
token, same context truncation), so a task scores the swapped variant exactly as `hf` scores the exported
folder; the token-level work goes to the backend's `loglikelihood` / `complete`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import (
    _add_special_kwargs,
    handle_stop_sequences,
    has_bos_prefix,
    normalize_gen_kwargs,
)
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from engine.backends.base import GenerationSettings
from engine.errors import BackendError

if TYPE_CHECKING:
    from engine.backends.base import SwappingBackend
    from engine.config import MergeConfig
    from evals.aggregate import SuiteResult
    from evals.lm_eval_suite import LMEvalSuite

DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's default when a task does not say


@functools.lru_cache(maxsize=4)
def _tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, trust_remote_code=False)


@register_model("mergescope")
class MergescopeLM(TemplateLM):
    """lm-eval's view of one variant on a running backend. `backend`: a started Backend (shared: other callers
    may swap it between calls; each call swaps back, under the backend's lock). `variant`: a MergeConfig, or
    None for the model the backend was started on. Without `backend`, `pretrained` (a checkpoint folder) starts
    one of kind `backend_kind`, which `close()` ends."""

    def __init__(
        self,
        backend: SwappingBackend | None = None,
        variant: MergeConfig | None = None,
        *,
        pretrained: str | Path | None = None,
        backend_kind: str = "auto",
        device: str | None = None,
        **_ignored: Any,  # lm-eval passes batch_size/max_batch_size/device: the backend batches itself
    ) -> None:
        super().__init__()
        self._owns_backend = backend is None
        if backend is None:
            if pretrained is None:
                raise BackendError("MergescopeLM needs a running backend or pretrained=<checkpoint folder>")
            from engine.backends import make_backend

            backend = make_backend(pretrained, kind=backend_kind, device=device)
        for method in ("loglikelihood", "complete"):
            if not callable(getattr(backend, method, None)):
                raise BackendError(f"the {backend.kind} backend has no {method}(): it cannot serve lm-eval")
        self.backend = backend
        self.variant = variant
        # Every variant of a sweep shares the start model's tokenizer (the models are checked compatible).
        self.tokenizer = _tokenizer(str(backend.start_model))
        # One position short of the engine's limit: vLLM needs room for the one token it always samples.
        self._max_length = int(backend.max_length) - 1

    # --- what TemplateLM needs ---------------------------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        # As lm-eval's hf model: BOS where the tokenizer has one, else end-of-text.
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.eot_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def tokenizer_name(self) -> str:
        return str(self.backend.start_model).replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **_: Any) -> list[int]:
        # The tokenizer's own special-token default, as lm-eval's hf model has it, but never a second BOS.
        kwargs = _add_special_kwargs(add_special_tokens, None)
        if add_special_tokens is None and has_bos_prefix(string, self.tokenizer.decode(self.prefix_token_id)):
            kwargs["add_special_tokens"] = False
        return self.tokenizer.encode(string, **kwargs)

    def tok_decode(self, tokens: list[int] | int, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(
            chat_history, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return getattr(self.tokenizer, "chat_template", None) if chat_template else None

    # --- scoring -----------------------------------------------------------------------------------------------
    def _window(self, context: list[int], continuation: list[int]) -> tuple[list[int], list[int]]:
        """Keep the last max_length tokens of context + continuation (lm-eval truncates on the left too)."""
        whole = (context + continuation)[-self._max_length :]
        keep = min(len(continuation), len(whole) - 1)
        if keep < len(continuation):
            raise BackendError(
                f"a continuation of {len(continuation)} tokens does not fit the engine's {self._max_length}"
            )
        return whole[: len(whole) - keep], whole[len(whole) - keep :]

    def _loglikelihood_tokens(
        self, requests: list[tuple[tuple[str, str], list[int], list[int]]], **_: Any
    ) -> list[tuple[float, bool]]:
        pairs = [self._window(ctx, cont) for _, ctx, cont in requests]
        results = self.backend.loglikelihood(self.variant, pairs)
        for (key, _, _), result in zip(requests, results, strict=True):
            self.cache_hook.add_partial("loglikelihood", key, result)
        return results

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """Whole-text log-likelihood (perplexity tasks): the text in disjoint windows of at most max_length
        tokens, each conditioned on the one token before it, all scored in one backend call."""
        windows: list[tuple[list[int], list[int]]] = []
        owner: list[int] = []
        for index, request in enumerate(requests):
            (text,) = request.args
            for window in get_rolling_token_windows(
                token_list=self.tok_encode(text),
                prefix_token=self.prefix_token_id,
                max_seq_len=self._max_length,
                context_len=1,
            ):
                windows.append(make_disjoint_window(window))
                owner.append(index)
        scores = self.backend.loglikelihood(self.variant, windows) if windows else []
        totals = [0.0] * len(requests)
        for index, (logprob, _) in zip(owner, scores, strict=True):
            totals[index] += logprob
        for request, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
        return totals

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Greedy (or sampled, as the task asks) continuations of raw-text contexts, cut at the task's stop
        strings and end-of-text, all in one backend call."""
        eos = self.tok_decode(self.eot_token_id, skip_special_tokens=False)
        prompts: list[list[int]] = []
        settings: list[GenerationSettings] = []
        stops: list[list[str]] = []
        for request in requests:
            context, gen_kwargs = request.args
            kwargs = normalize_gen_kwargs(dict(gen_kwargs or {}), DEFAULT_MAX_GEN_TOKS)
            max_gen = int(kwargs["max_gen_toks"])
            if max_gen >= self._max_length:
                raise BackendError(
                    f"max_gen_toks {max_gen} must be below the engine's sequence length {self._max_length}"
                )
            temperature = float(kwargs.get("temperature") or 0.0) if kwargs.get("do_sample") else 0.0
            settings.append(
                GenerationSettings(
                    max_tokens=max_gen,
                    temperature=temperature,
                    top_p=float(kwargs.get("top_p") or 1.0),
                    seed=int(kwargs.get("seed") or 0),
                )
            )
            stops.append(handle_stop_sequences(kwargs.get("until"), eos=eos))
            prompts.append(self.tok_encode(context)[-(self._max_length - max_gen) :])
        replies = self.backend.complete(self.variant, prompts, settings, stops)
        for request, reply in zip(requests, replies, strict=True):
            self.cache_hook.add_partial("generate_until", request.args, reply)
        return replies

    def close(self) -> None:
        """End the backend if this object started it."""
        if self._owns_backend:
            self.backend.close()


def evaluate_suite(suite: LMEvalSuite, backend: SwappingBackend, variant: MergeConfig | None) -> SuiteResult:
    """Run an `lm-eval:` suite's tasks on `variant` (swapped into `backend` as needed) and score them as lm-eval
    does; per-sample records become the SuiteResult's items."""
    from lm_eval.evaluator import evaluate

    from evals.lm_eval_suite import result_from_samples

    if not callable(getattr(backend, "loglikelihood", None)):  # an engine pool serves chat suites only
        raise BackendError(
            f"{suite.ref}: lm-eval suites need a single engine ({type(backend).__name__} cannot score "
            "log-likelihoods); run them without --workers"
        )
    lm = MergescopeLM(backend, variant)
    suite.reseed()  # the same few-shot examples at every point
    try:
        out = evaluate(lm, suite.task_dict, limit=suite.limit, log_samples=True, bootstrap_iters=0)
    except BackendError:
        raise
    except Exception as exc:  # a task's own code (filters, metrics) failing, named with the suite
        raise BackendError(f"{suite.ref}: lm-eval evaluation failed: {type(exc).__name__}: {exc}") from exc
    return result_from_samples(suite, out["samples"])
