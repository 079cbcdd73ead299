"""What every tab of the dashboard shares: the path policy, the engine holder, the results store, the defaults
the page opens on, the download folder, and the decorator that turns bad input into a message in the page.
One `AppContext` per app; per-browser-tab state lives in `ui.state.Session`."""

from __future__ import annotations

import functools
import inspect
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from engine.errors import MergescopeError
from engine.store import ResultStore
from ui.engine_holder import EngineHolder
from ui.paths import PathPolicy, display_path

ENGINE_QUEUE = "engine"
# Every event that touches the serving engine shares one Gradio queue: swaps and generations never interleave.
ENGINE_EVENT = dict(concurrency_limit=1, concurrency_id=ENGINE_QUEUE)
# Sweeps on an engine pool of their own (`mergescope ui --workers N`) queue apart: a sweep does not hold up a chat.
POOL_EVENT = dict(concurrency_limit=1, concurrency_id="sweep-pool")
DEFAULT_WEIGHTS = "0:1:0.1"


def readable(fn: Callable) -> Callable:
    """Turn a MergescopeError (bad input, incompatible checkpoints, failed eval) into a message in the page; the
    app keeps running. Works for plain functions and generators."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from fn(*args, **kwargs)
            except MergescopeError as exc:
                raise gr.Error(str(exc), duration=None) from exc

        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MergescopeError as exc:
            raise gr.Error(str(exc), duration=None) from exc

    return wrapper


class Defaults:
    """What the page opens on: the demo family (or nothing, where it is missing)."""

    def __init__(self, family: Any | None) -> None:
        self.family = family
        if family is None:
            self.base = self.general = self.skills = self.other_skills = self.references = ""
            self.suites: list[tuple[str, str]] = []
            self.dataset_sizes: dict[str, int] = {}
            return
        self.base = display_path(family.base)
        self.general = display_path(family.general)
        # The classic PTM story adds one skill; the others are listed so a 2-D grid is one edit away.
        skills = list(family.skills.items())
        self.skills = "\n".join(f"{n}={display_path(p)}" for n, p in skills[:1])
        self.other_skills = "\n".join(f"{n}={display_path(p)}" for n, p in skills)
        self.references = "\n".join(f"{n}={display_path(p)}" for n, p in family.references.items())
        # Values are absolute paths (what the API takes too); the page shows the suite's folder name.
        self.suites = [(Path(p).name, str(Path(p).resolve())) for p in family.suites]
        self.dataset_sizes = dict(family.dataset_sizes or {})

    @property
    def suite_choices(self) -> list[tuple[str, str]]:
        """The suite picker's choices: the family's own suites (ticked by default), then every built-in suite
        (xstest, gsm8k, humaneval...), unticked: they cost minutes a point on a CPU."""
        from evals.builtin import list_builtin

        own = {path for _, path in self.suites}
        return self.suites + [(name, path) for name, path, _ in list_builtin() if path not in own]


@dataclass
class AppContext:
    """The app-wide pieces every tab's handlers use."""

    store_path: Path
    policy: PathPolicy
    engine: EngineHolder
    defaults: Defaults
    default_weights: str = DEFAULT_WEIGHTS
    downloads: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mergescope-ui-")))
    # The engines sweeps run on when they are not the chat's (a Ray pool); None: sweeps share `engine`.
    pool: EngineHolder | None = None

    @property
    def sweep_engine(self) -> EngineHolder:
        """Where a sweep's points are generated: the pool, else the one engine chat and A/B use too."""
        return self.pool or self.engine

    @property
    def sweep_event(self) -> dict[str, Any]:
        """The Gradio queue of sweep events: the engine's own, unless sweeps have a pool of their own."""
        return POOL_EVENT if self.pool is not None else ENGINE_EVENT

    def close_engines(self) -> None:
        """Shut down the engines this app started (the chat's and the pool's)."""
        for holder in (self.engine, self.pool):
            if holder is not None:
                holder.close()

    def open_store(self) -> ResultStore:
        # One connection per event: sqlite3 connections must not be shared by concurrent threads.
        return ResultStore(self.store_path)

    @property
    def export_root(self) -> Path:
        # Exports go below the working directory when it is an allowed root (never into the shipped assets).
        return Path.cwd() if self.policy.allowed(Path.cwd()) else self.policy.roots[-1]
