"""Shareable state: the page's URL carries the sweep, the variants in the chat and the behaviour browser's
selection (`?sweep=ID&variants=ω=0|ω=1&suite=NAME&item=ID`); opening such a URL against the same store fills the
fields from the stored sweep's spec and restores its plots, table, chat panes and browser selection."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

import gradio as gr
import yaml

from engine.errors import MergescopeError
from ui.context import AppContext
from ui.paths import display_path
from ui.state import Session
from ui.tabs import sweep

VARIANT_SEP = "|"  # labels of 2-D points hold commas: ω=(0,1)
# Writes the query the server computed into the address bar (no reload), so copying the URL shares the view.
SET_URL_JS = "(q) => { if (q) { history.replaceState(null, '', q); } return []; }"


def share_query(session: Session, picked: list[str] | None) -> str:
    """`?sweep=…&variants=…&suite=…&item=…` for this session (empty without a sweep)."""
    if not session.sweep_id:
        return ""
    params: dict[str, str] = {"sweep": session.sweep_id}
    if picked:
        params["variants"] = VARIANT_SEP.join(picked)
    params.update({k: v for k, v in session.browse.items() if v})
    return "?" + urlencode(params)


def fields_from_spec(ctx: AppContext, spec: dict[str, Any], points: list[dict[str, Any]]) -> list[Any]:
    """The page's sweep fields (in `sweep.spec_inputs` order) that rebuild a stored sweep's spec."""
    from evals.lm_eval_suite import is_lm_eval_ref

    family_suites = {p for _, p in ctx.defaults.suites}
    every = [str(s) for s in spec.get("suites") or []]
    suites = [s for s in every if not is_lm_eval_ref(s)]
    composites = spec.get("composites") or {}
    params = spec.get("method_params") or {}

    def named(mapping: dict[str, str]) -> str:
        return "\n".join(f"{n}={display_path(p) if Path(p).exists() else p}" for n, p in mapping.items())

    def ckpt(path: str) -> str:
        return display_path(path) if Path(path).exists() else path

    return [
        ckpt(spec["base"]),
        ckpt(spec["general"]),
        named(spec.get("skills") or {}),
        named(spec.get("references") or {}),
        spec.get("method") or "task_arithmetic",
        yaml.safe_dump(params, default_flow_style=True).strip() if params else "{}",
        ",".join(str(w) for w in spec.get("weights") or []),
        bool(spec.get("grid")),
        [s for s in suites if s in family_suites],
        "\n".join(s for s in suites if s not in family_suites),
        bool(spec.get("standard_references", True)),
        any((p.get("scores") or {}).get("heuristic") for p in points),
        "\n".join(s for s in every if is_lm_eval_ref(s)),
        "\n".join(f"{name}={','.join(members)}" for name, members in composites.items()),
    ]


def restore(
    ctx: AppContext, session: Session, y_metric: str | None, params: dict[str, str]
) -> tuple[list, tuple]:
    """(field values, sweep outputs) for a shared URL's query parameters."""
    with ctx.open_store() as store:
        sweep_id = store.resolve_sweep(params["sweep"])
        spec = next(s["spec"] for s in store.sweeps() if s["id"] == sweep_id)
        points = store.sweep_points(sweep_id)
    fields = fields_from_spec(ctx, spec, points)
    session.browse = {k: params[k] for k in ("suite", "item") if params.get(k)}
    outputs = list(sweep.reopen(ctx, session, y_metric, fields))
    restored: Session = outputs[0]
    restored.browse = dict(session.browse)
    picked = [v for v in (params.get("variants") or "").split(VARIANT_SEP) if v]
    if restored.sweep_id != sweep_id:
        outputs[-1] = (
            f"Sweep {sweep_id}: its settings could not be rebuilt on this page (is it from the CLI?)."
        )
        return fields, tuple(outputs)
    return fields, sweep.sweep_outputs(restored, y_metric, f"Restored shared sweep {sweep_id}", picked=picked)


def wire(ctx: AppContext, ui: SimpleNamespace) -> None:
    fields = sweep.spec_inputs(ui)

    def on_open(request: gr.Request, session: Session, y_metric, *inputs):
        params = dict(request.query_params) if request is not None else {}
        if params.get("sweep"):
            try:
                values, outputs = restore(ctx, session, y_metric, params)
                return [*values, *outputs]
            except MergescopeError as exc:
                gr.Warning(f"Shared link: {exc}")
        return [*(gr.update() for _ in fields), *sweep.open_page(ctx, session, y_metric, inputs)]

    def query(session: Session, picked: list[str] | None) -> str:
        return share_query(session, picked)

    ui.app.load(
        on_open,
        [ui.session, ui.sweep.y_metric, *fields],
        [*fields, *sweep.sweep_output_components(ui)],
        api_name=False,
    )
    # Created while the app's Blocks context is open (wire runs inside it): a page-level hidden box.
    box = gr.Textbox(visible="hidden", elem_id="share-query", label="share query")
    for trigger in (ui.chat.picked.change, ui.sweep.status.change, ui.browser.detail.change):
        trigger(query, [ui.session, ui.chat.picked], box, api_name=False)
    box.change(None, box, None, js=SET_URL_JS, api_name=False)
