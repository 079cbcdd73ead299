"""The one serving backend of the dashboard, shared by every browser session: given, or started lazily."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import ConfigError

if TYPE_CHECKING:
    from engine.backends.base import Backend

log = logging.getLogger(__name__)


class EngineHolder:
    """The one serving backend: given, or started lazily by `factory(start_model)` on first use."""

    def __init__(self, backend: Backend | None, factory: Callable[[Path], Backend] | None) -> None:
        self._backend = backend
        self._owned = backend is None  # an engine we start, we also close; a given one belongs to the caller
        self._factory = factory
        self._lock = threading.Lock()

    def get(self, start_model: str | Path) -> Backend:
        with self._lock:
            if self._backend is None:
                if self._factory is None:
                    raise ConfigError("no serving backend configured for the dashboard")
                self._backend = self._factory(Path(start_model))
            return self._backend

    @property
    def started(self) -> bool:
        return self._backend is not None

    def warm_up(self, start_model: str | Path) -> threading.Thread:
        """Start the engine in the background now, so the first sweep or chat does not wait for it. A failure is
        only logged here: the first real use retries and shows the error in the page."""

        def run() -> None:
            try:
                self.get(start_model)
            except Exception as exc:  # reported again, readably, on first use
                log.warning("engine warm-up failed: %s", exc)

        thread = threading.Thread(target=run, name="mergescope-engine-warm-up", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        """Shut down the engine if this holder started it (its worker processes must not outlive the app)."""
        with self._lock:
            backend, self._backend = self._backend, None
        if backend is not None and self._owned:
            backend.close()
