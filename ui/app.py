"""The dashboard: checkpoints + compatibility + task-vector diagnostics, a live sweep with tradeoff plots, side-by-side
chat with several variants, export. Thin: every action calls an engine entry point the CLI calls too
(`prepare_sweep`/`run_sweep`, `Backend.stream`, `MergeConfig.to_yaml`, `export_merge`, `task_vector_diagnostics`).

This module only assembles the page: each tab's layout, handlers and wiring live in `ui.tabs.<tab>`; what they
share (path policy, engine holder, store, defaults) is `ui.context.AppContext`.

Engine work is serialized: every event that touches the serving engine shares one Gradio queue
(`concurrency_id="engine"`, limit 1), and the backend's own lock keeps swap + generation atomic. With a sweep pool
(`sweep_backend_factory`: N engines as Ray actors, `mergescope ui --workers N`) sweeps run there, on a queue of
their own, while chat and A/B keep the one engine. Each browser tab has its own `Session` in `gr.State`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import gradio as gr

from engine.store import ResultStore
from ui import share
from ui.context import DEFAULT_WEIGHTS, AppContext, Defaults
from ui.engine_holder import EngineHolder
from ui.page_js import PAGE_JS
from ui.paths import PathPolicy
from ui.state import Session
from ui.tabs import ab, browser, chat, checkpoints, export, sweep
from ui.tabs.chat import probe_prompts  # noqa: F401 - tests draw probe prompts from here

if TYPE_CHECKING:
    from engine.backends.base import Backend

CSS = """
.ms-badge-refuse { color: #b00020; font-weight: 600; }
.ms-badge-comply { color: #1b7f3b; font-weight: 600; }
"""

# (tab title, module): each module has layout(ctx) and wire(ctx, ui); `ui.<key>` is its namespace.
TABS = (
    ("Checkpoints", "ckpt", checkpoints),
    ("Sweep", "sweep", sweep),
    ("Chat", "chat", chat),
    ("Behaviour", "browser", browser),
    ("A/B", "ab", ab),
    ("Export", "export", export),
)


def build_app(
    *,
    store_path: str | Path,
    allowed_roots: list[str | Path],
    backend: Backend | None = None,
    backend_factory: Callable[[Path], Backend] | None = None,
    family: Any | None = None,
    default_weights: str = DEFAULT_WEIGHTS,
    warm_up: bool = False,
    sweep_backend_factory: Callable[[Path], Backend] | None = None,
) -> gr.Blocks:
    """The dashboard. Pass a running `backend` (tests share one) or a `backend_factory(start_model)` (started on
    first use, or at once in the background with `warm_up`, on the family's general model). `family`: the demo
    family the page opens on (None: empty fields). `sweep_backend_factory`: the engines sweeps run on instead (an
    `engine.pool.EnginePool`), started like the chat's engine; chat and A/B keep `backend`."""
    ResultStore(store_path).close()  # fail at start, not at the first sweep, if the store cannot be opened
    ctx = AppContext(
        store_path=Path(store_path),
        policy=PathPolicy.from_dirs(list(allowed_roots)),
        engine=EngineHolder(backend, backend_factory),
        defaults=Defaults(family),
        default_weights=default_weights,
        pool=EngineHolder(None, sweep_backend_factory) if sweep_backend_factory else None,
    )
    if warm_up and ctx.defaults.general:
        if backend is None:
            ctx.engine.warm_up(ctx.defaults.general)
        if ctx.pool is not None:
            ctx.pool.warm_up(ctx.defaults.general)

    with gr.Blocks(title="mergescope") as app:
        ui = SimpleNamespace(app=app, session=gr.State(Session()))
        gr.Markdown(
            "# mergescope\nθ(ω) = θ_G + Σ ω_k (θ_Dk − θ_pre): sweep ω, see the tradeoff, chat with the variants, "
            f"export the one you pick. Paths are limited to: `{ctx.policy.describe()}`."
        )
        for title, key, module in TABS:
            with gr.Tab(title):
                setattr(ui, key, module.layout(ctx))
        for _, _, module in TABS:
            module.wire(ctx, ui)
        share.wire(ctx, ui)

    app.mergescope_downloads = ctx.downloads  # type: ignore[attr-defined]
    app.mergescope_engine = ctx.engine  # type: ignore[attr-defined]
    app.mergescope_close_engines = ctx.close_engines  # type: ignore[attr-defined]
    app.mergescope_context = ctx  # type: ignore[attr-defined]
    app.mergescope_roots = ctx.policy.roots  # type: ignore[attr-defined]
    return app


def launch(
    app: gr.Blocks,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    auth: tuple[str, str] | None = None,
    block: bool = True,
) -> Any:
    """Launch with the project's defaults: loopback only unless asked, downloads served from the app's own folder."""
    return app.launch(
        server_name=host,
        server_port=port,
        share=share,
        auth=auth,
        prevent_thread_lock=not block,
        allowed_paths=[str(app.mergescope_downloads)],  # type: ignore[attr-defined]
        css=CSS,
        js=PAGE_JS,
        quiet=True,
        show_error=True,
    )
