"""Behaviour tab: a stored sweep's replies item by item across ω (and the reference models), from the store —
nothing is regenerated. Filters: items whose outcome flips along ω, items where two chosen points disagree,
free-text search. Selecting an item shows every point's reply and puts its prompt in the Chat tab's box. The
table itself is `engine.behaviour` (the `mergescope browse` command prints the same)."""

from __future__ import annotations

import html
from types import SimpleNamespace
from typing import Any

import gradio as gr
import pandas as pd

from engine.behaviour import BehaviourTable, stored_behaviour, suite_names
from engine.errors import ConfigError
from ui.context import AppContext, readable
from ui.state import Session

MODES = [("every item", "all"), ("outcome flips along ω", "flips"), ("two points disagree", "disagree")]


def load_table(ctx: AppContext, session: Session, suite: str | None) -> BehaviourTable:
    if not session.sweep_id:
        raise ConfigError("behaviour: run or reopen a sweep first")
    with ctx.open_store() as store:
        return stored_behaviour(store, session.sweep_id, suite or None)[1]


def browse(
    ctx: AppContext, session: Session, suite: str | None, mode: str, a: str | None, b: str | None, text: str
) -> tuple[pd.DataFrame, str]:
    """The filtered table and a one-line summary."""
    table = load_table(ctx, session, suite)
    rows = table.filtered(mode=mode or "all", a=a, b=b, text=text or "")
    header, body = table.to_records(rows)
    session.browse = {"suite": table.suite, **{k: v for k, v in session.browse.items() if k == "item"}}
    summary = f"**{len(rows)}** of {len(table.rows)} items of `{table.suite}` ({table.aggregate})"
    if mode == "flips":
        summary += ", sorted by the ω where the outcome first changes"
    return pd.DataFrame(body, columns=header), summary


def item_detail(ctx: AppContext, session: Session, suite: str | None, item_id: str) -> tuple[str, str]:
    """(the item's prompt, every point's stored reply with its outcome as HTML)."""
    table = load_table(ctx, session, suite)
    row = table.row(item_id)
    session.browse = {"suite": table.suite, "item": item_id}
    cells = []
    for column, outcome, reply in zip(table.columns, row.outcomes, row.replies, strict=True):
        css = {"refused": "ms-badge-refuse", "complied": "ms-badge-comply"}.get(outcome or "", "")
        cells.append(
            f"<tr><td><b>{html.escape(column.label)}</b></td><td class='{css}'>{outcome or '—'}</td>"
            f"<td>{html.escape(reply if reply is not None else '(not stored)')}</td></tr>"
        )
    detail = (
        f"<div id='browse-item-id'>{html.escape(item_id)}</div><p>{html.escape(row.prompt)}</p>"
        f"<table><tr><th>point</th><th>outcome</th><th>reply</th></tr>{''.join(cells)}</table>"
    )
    return row.prompt, detail


def suite_choices(ctx: AppContext, session: Session, current: str | None) -> tuple[Any, Any, Any]:
    """Updates for the suite and the two point pickers after the session's sweep changed."""
    if not session.sweep_id:
        return gr.update(choices=[], value=None), gr.update(choices=[]), gr.update(choices=[])
    with ctx.open_store() as store:
        known = {s["id"] for s in store.sweeps()}
        names = suite_names(store.sweep_points(session.sweep_id)) if session.sweep_id in known else []
    wanted = session.browse.get("suite") or current
    value = wanted if wanted in names else (names[0] if names else None)
    labels = session.labels()
    a = labels[0] if labels else None
    b = next((lbl for lbl in reversed(labels) if lbl.startswith("ω")), labels[-1] if labels else None)
    return (
        gr.update(choices=names, value=value),
        gr.update(choices=labels, value=a),
        gr.update(choices=labels, value=b),
    )


def layout(ctx: AppContext) -> SimpleNamespace:
    gr.Markdown(
        "Every stored reply of the current sweep, item by item: one column per ω and reference model. "
        "Select a row to read each point's reply and put its prompt in the **Chat** tab."
    )
    with gr.Row():
        suite = gr.Dropdown([], label="suite", elem_id="browse-suite")
        mode = gr.Radio(MODES, value="all", label="show", elem_id="browse-mode")
        a = gr.Dropdown([], label="point A (for 'disagree')", elem_id="browse-a")
        b = gr.Dropdown([], label="point B", elem_id="browse-b")
        search = gr.Textbox(label="search (id, prompt, replies)", elem_id="browse-search")
    summary = gr.Markdown(elem_id="browse-summary")
    table = gr.Dataframe(interactive=False, elem_id="browse-table", wrap=True, max_height=420)
    detail = gr.HTML(elem_id="browse-detail")
    item = gr.Textbox(visible="hidden", label="item id", elem_id="browse-item")
    return SimpleNamespace(
        suite=suite,
        mode=mode,
        a=a,
        b=b,
        search=search,
        summary=summary,
        table=table,
        detail=detail,
        item=item,
    )


def wire(ctx: AppContext, ui: SimpleNamespace) -> None:
    t = ui.browser

    @readable
    def browse_ui(session: Session, suite, mode, a, b, text):
        return browse(ctx, session, suite, mode, a, b, text)

    @readable
    def item_ui(session: Session, suite, item_id: str):
        return item_detail(ctx, session, suite, item_id)

    def select_ui(session: Session, suite, evt: gr.SelectData):
        cells = evt.row_value or []
        if not cells:
            return gr.update(), gr.update()
        return item_ui(session, suite, str(cells[0]))

    def refresh(session: Session, current):
        return suite_choices(ctx, session, current)

    def refresh_table(session: Session, suite, mode, a, b, text):
        if not suite or not session.sweep_id:
            return pd.DataFrame(), ""
        return browse_ui(session, suite, mode, a, b, text)

    filters = [t.suite, t.mode, t.a, t.b, t.search]

    # A finished sweep, a reopened one, a restored URL: the status line changes each time.
    def restore_item(session: Session, suite):
        # A shared URL names an item: show it as if it had been selected.
        item = session.browse.get("item")
        if not item or not suite:
            return gr.update(), ""
        try:
            return item_detail(ctx, session, suite, item)
        except ConfigError:
            return gr.update(), ""

    ui.sweep.status.change(refresh, [ui.session, t.suite], [t.suite, t.a, t.b], api_name=False).then(
        refresh_table, [ui.session, *filters], [t.table, t.summary], api_name=False
    ).then(restore_item, [ui.session, t.suite], [ui.chat.prompt, t.detail], api_name=False)
    for control in (t.suite, t.mode, t.a, t.b):
        control.input(browse_ui, [ui.session, *filters], [t.table, t.summary], api_name=False)
    t.search.submit(browse_ui, [ui.session, *filters], [t.table, t.summary], api_name="browse")
    t.table.select(select_ui, [ui.session, t.suite], [ui.chat.prompt, t.detail], api_name=False)
    # The same action by item id, for API callers and for a shared URL's restored selection.
    t.item.input(item_ui, [ui.session, t.suite, t.item], [ui.chat.prompt, t.detail], api_name="browse_item")
