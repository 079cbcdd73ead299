"""A backend that starts its engine on first use: a sweep whose every result is already stored never pays for an
engine start (tens of seconds to minutes), and one that needs generation starts it at the first point that does."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from engine.backends.base import Backend, GenerationSettings, Messages, SettingsArg

if TYPE_CHECKING:
    from engine.config import MergeConfig


class LazyBackend:
    """Stands in for `factory()`'s backend (same calls) and creates it the first time a call needs generation."""

    def __init__(
        self,
        start_model: str | Path,
        factory: Callable[[], Backend],
        *,
        kind: str = "auto",
        dtype: str | None = None,
        on_start: Callable[[Backend, float], None] | None = None,
    ) -> None:
        self.start_model = Path(start_model)
        self._factory = factory
        self._requested_kind = kind
        self._dtype = dtype  # the serving dtype the factory's backend will use (store keys need it up front)
        self._on_start = on_start
        self._backend: Backend | None = None
        self._lock = threading.Lock()

    @property
    def started(self) -> bool:
        return self._backend is not None

    @property
    def kind(self) -> str:
        return self._backend.kind if self._backend is not None else self._requested_kind

    @property
    def last_timings(self) -> dict[str, float]:
        return self._backend.last_timings if self._backend is not None else {"swap_s": 0.0, "generate_s": 0.0}

    @property
    def swaps(self) -> int:
        return getattr(self._backend, "swaps", 0)

    @property
    def dtype(self) -> str | None:
        return getattr(self._backend, "dtype", self._dtype) if self._backend is not None else self._dtype

    @property
    def swap_path(self) -> str | None:
        return getattr(self._backend, "swap_path", None)

    @property
    def swap_reason(self) -> str:
        return getattr(self._backend, "swap_reason", "no engine started")

    def describe(self) -> dict:
        if self._backend is not None and hasattr(self._backend, "describe"):
            return self._backend.describe()
        return {"backend": self.kind, "dtype": self.dtype, "swap_path": None, "swap_reason": self.swap_reason}

    def generate_all(self, jobs: list) -> Iterator[tuple[list[str], dict[str, float]]]:
        """`engine.sweep.generate_all` on the real backend, started only when the first job is asked for."""
        from engine.sweep import generate_all

        if not jobs:
            return
        yield from generate_all(self.backend(), jobs)

    def backend(self) -> Backend:
        """The real backend, started now if it was not yet."""
        with self._lock:
            if self._backend is None:
                import time

                begin = time.perf_counter()
                self._backend = self._factory()
                if self._on_start is not None:
                    self._on_start(self._backend, time.perf_counter() - begin)
            return self._backend

    def generate(self, variant: MergeConfig | None, prompts: list[Messages], settings: SettingsArg) -> list[str]:
        return self.backend().generate(variant, prompts, settings)

    def stream(self, variant: MergeConfig | None, messages: Messages, settings: GenerationSettings) -> Iterator[str]:
        return self.backend().stream(variant, messages, settings)

    def close(self) -> None:
        with self._lock:
            if self._backend is not None:
                self._backend.close()
