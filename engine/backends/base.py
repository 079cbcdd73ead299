"""The serving-backend contract and the part every backend shares: one lock around swap + generate, so no reply
ever mixes two variants, and the bookkeeping of which variant is loaded and how long the last call took."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import yaml

from engine.errors import BackendError

if TYPE_CHECKING:
    from engine.config import MergeConfig

Messages = list[dict[str, str]]
TokenPair = tuple[list[int], list[int]]  # (context token ids, continuation token ids)

# The key of "the model the backend was started on" (variant=None).
START_KEY = "start"


@dataclass(frozen=True)
class GenerationSettings:
    """Sampling settings of one request. temperature 0 means greedy; seed makes sampled replies repeatable."""

    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise BackendError(f"generation setting max_tokens must be >= 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise BackendError(f"generation setting temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise BackendError(f"generation setting top_p must be in (0, 1], got {self.top_p}")

    @classmethod
    def from_mapping(cls, values: dict[str, Any] | None, *, where: str = "generation") -> GenerationSettings:
        """Settings from a suite manifest's `generation:` block; unknown keys are an error naming `where`."""
        values = dict(values or {})
        known = {"max_tokens", "temperature", "top_p", "seed"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise BackendError(f"{where}: unknown generation setting(s) {unknown}; known: {sorted(known)}")
        try:
            return cls(
                max_tokens=int(values.get("max_tokens", cls.max_tokens)),
                temperature=float(values.get("temperature", cls.temperature)),
                top_p=float(values.get("top_p", cls.top_p)),
                seed=int(values.get("seed", cls.seed)),
            )
        except (TypeError, ValueError) as exc:
            raise BackendError(f"{where}: bad generation setting: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


SettingsArg = GenerationSettings | Sequence[GenerationSettings]


def per_prompt_settings(settings: SettingsArg, n: int) -> list[GenerationSettings]:
    """One settings object per prompt: a single one applies to all, a sequence must match the prompts."""
    if isinstance(settings, GenerationSettings):
        return [settings] * n
    settings = list(settings)
    if len(settings) != n:
        raise BackendError(
            f"got {len(settings)} generation settings for {n} prompts; give one or one per prompt"
        )
    return settings


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """`text` up to (not including) the earliest occurrence of any stop string."""
    cut = len(text)
    for stop in stops:
        if stop:
            found = text.find(stop)
            if found != -1:
                cut = min(cut, found)
    return text[:cut]


def variant_key(variant: MergeConfig | None) -> str:
    """Stable identity of a variant: the hash of its mergekit YAML (None: the start model)."""
    if variant is None:
        return START_KEY
    return hashlib.sha256(variant.to_yaml().encode()).hexdigest()[:16]


@runtime_checkable
class Backend(Protocol):
    """What the sweep runner and the chat UI need from a serving engine."""

    kind: str
    start_model: Path
    last_timings: dict[str, float]

    def generate(
        self, variant: MergeConfig | None, prompts: list[Messages], settings: SettingsArg
    ) -> list[str]: ...

    def stream(
        self, variant: MergeConfig | None, messages: Messages, settings: GenerationSettings
    ) -> Iterator[str]: ...

    def close(self) -> None: ...


class SwappingBackend:
    """Shared machinery: subclasses implement `_load`, `_generate` and `_stream`; this class decides when a swap
    is needed and holds the lock across swap + generation."""

    kind = "abstract"

    def __init__(self, start_model: str | Path) -> None:
        self.start_model = Path(start_model)
        self.loaded_key: str | None = START_KEY
        self.last_timings: dict[str, float] = {"swap_s": 0.0, "generate_s": 0.0}
        self.swaps = 0  # how many real weight swaps happened (tests and benches read it)
        self.dtype = "float32"  # the serving dtype (subclasses set the one they chose)
        # Which path the last merge swap took ("resident" / "streaming") and why; None before the first.
        self.swap_path: str | None = None
        self.swap_reason = "no merge swapped yet"
        # A plain Lock, not an RLock: a streaming generator may be resumed (and finished) on another thread than the
        # one that started it (web servers run generator steps in a thread pool), and an RLock must be released
        # by its owner thread.
        self._lock = threading.Lock()
        self._closed = False

    # --- subclass hooks ---------------------------------------------------------------------------------------
    def _load(self, variant: MergeConfig | None) -> None:
        raise NotImplementedError

    def _generate(self, prompts: list[Messages], settings: list[GenerationSettings]) -> list[str]:
        raise NotImplementedError

    def _stream(self, messages: Messages, settings: GenerationSettings) -> Iterator[str]:
        raise NotImplementedError

    def _close(self) -> None:
        pass

    # --- public API -------------------------------------------------------------------------------------------
    def _ensure(self, variant: MergeConfig | None) -> float:
        """Swap to `variant` unless it is already loaded; returns the seconds spent swapping. Caller holds lock."""
        if self._closed:
            raise BackendError(f"the {self.kind} backend was closed")
        key = variant_key(variant)
        if key == self.loaded_key:
            return 0.0
        start = time.perf_counter()
        # Until the new weights are fully in, the served weights are unknown: a failed swap forces a reload later.
        self.loaded_key = None
        self._load(variant)
        self.loaded_key = key
        self.swaps += 1
        return time.perf_counter() - start

    def generate(
        self, variant: MergeConfig | None, prompts: list[Messages], settings: SettingsArg
    ) -> list[str]:
        """Replies of `variant` to every prompt, in one batched call. Each prompt is a list of chat messages."""
        per_prompt = per_prompt_settings(settings, len(prompts))
        with self._lock:
            swap_s = self._ensure(variant)
            start = time.perf_counter()
            replies = self._generate(prompts, per_prompt) if prompts else []
            self.last_timings = {"swap_s": swap_s, "generate_s": time.perf_counter() - start}
        return replies

    def stream(
        self, variant: MergeConfig | None, messages: Messages, settings: GenerationSettings
    ) -> Iterator[str]:
        """Cumulative reply text of `variant` to one conversation, growing as tokens arrive. The lock is held until
        the generator finishes or is closed, so no swap lands in the middle of a reply."""
        with self._lock:
            swap_s = self._ensure(variant)
            start = time.perf_counter()
            yield from self._stream(messages, settings)
            self.last_timings = {"swap_s": swap_s, "generate_s": time.perf_counter() - start}

    # --- raw-text scoring (the lm-evaluation-harness bridge): token ids in, no chat template -------------------
    def _loglikelihood(self, requests: list[TokenPair]) -> list[tuple[float, bool]]:
        raise BackendError(f"the {self.kind} backend cannot score log-likelihoods")

    def _complete(
        self, prompts: list[list[int]], settings: list[GenerationSettings], stops: list[list[str]]
    ) -> list[str]:
        raise BackendError(f"the {self.kind} backend cannot complete raw prompts")

    def loglikelihood(
        self, variant: MergeConfig | None, requests: Sequence[tuple[Sequence[int], Sequence[int]]]
    ) -> list[tuple[float, bool]]:
        """For each (context ids, continuation ids): the summed log-probability of the continuation after the
        context under `variant`, and whether greedy decoding would produce exactly that continuation. The context
        must hold at least one token (lm-eval passes its prefix token for an empty one)."""
        pairs: list[TokenPair] = []
        for index, (context, continuation) in enumerate(requests):
            if not context or not continuation:
                raise BackendError(f"loglikelihood request {index}: context and continuation need >= 1 token")
            pairs.append((list(context), list(continuation)))
        return self._locked(variant, self._loglikelihood, pairs) if pairs else []

    def complete(
        self,
        variant: MergeConfig | None,
        prompts: Sequence[Sequence[int]],
        settings: SettingsArg,
        stops: Sequence[Sequence[str]] | None = None,
    ) -> list[str]:
        """Continuations of raw token-id prompts (no chat template), each cut before the first of its stop
        strings; `stops` is one list per prompt (None: none)."""
        per_prompt = per_prompt_settings(settings, len(prompts))
        stop_lists = [list(s) for s in stops] if stops is not None else [[] for _ in prompts]
        if len(stop_lists) != len(prompts):
            raise BackendError(f"got {len(stop_lists)} stop lists for {len(prompts)} prompts")
        if not prompts:
            return []
        ids = [list(p) for p in prompts]
        texts = self._locked(variant, self._complete, ids, per_prompt, stop_lists)
        return [cut_at_stop(text, stop) for text, stop in zip(texts, stop_lists, strict=True)]

    def _locked(self, variant: MergeConfig | None, work: Callable[..., Any], *args: Any) -> Any:
        """Swap to `variant` and run `work(*args)` under the backend lock, timing both like `generate`."""
        with self._lock:
            swap_s = self._ensure(variant)
            start = time.perf_counter()
            out = work(*args)
            self.last_timings = {"swap_s": swap_s, "generate_s": time.perf_counter() - start}
        return out

    def describe(self) -> dict[str, Any]:
        """What a dashboard shows about the engine: backend kind, serving dtype, swap path and why."""
        return {
            "backend": self.kind,
            "dtype": self.dtype,
            "swap_path": self.swap_path,
            "swap_reason": self.swap_reason,
            "start_model": str(self.start_model),
        }

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._close()

    def __enter__(self) -> SwappingBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _config_dict(variant: MergeConfig | str) -> dict[str, Any]:
    text = variant if isinstance(variant, str) else variant.to_yaml()
    data = yaml.safe_load(text)
    return data if isinstance(data, dict) else {}


def config_refs(variant: MergeConfig | str) -> list[str]:
    """Every checkpoint a mergekit config names (base_model, models[].model, slices[].sources[].model)."""
    data = _config_dict(variant)
    refs = [data.get("base_model")]
    refs += [m.get("model") for m in data.get("models") or [] if isinstance(m, dict)]
    for piece in data.get("slices") or []:
        refs += [src.get("model") for src in (piece or {}).get("sources") or [] if isinstance(src, dict)]
    return [str(r) for r in dict.fromkeys(refs) if r]


def single_checkpoint(variant: MergeConfig) -> Path | None:
    """The checkpoint a variant config merely loads as is, or None for a real merge. That is a config over exactly
    one model, no base model, no slices, with method passthrough, or linear (Σ w·θ / Σ w is θ for one model; the
    sweep builds reference models this way). Backends load such a checkpoint directly."""
    data = _config_dict(variant)
    models = data.get("models") or []
    if len(models) != 1 or data.get("slices") or data.get("base_model"):
        return None
    if data.get("merge_method") not in ("passthrough", "linear"):
        return None
    entry = models[0] if isinstance(models[0], dict) else {"model": models[0]}
    model = entry.get("model")
    return Path(model) if isinstance(model, str) and model else None
