"""Chat tab: one prompt to up to `MAX_CHAT_VARIANTS` variants side by side, each reply streamed with a refusal
badge. `add_variant` is the one way a variant joins the panes (picker, table row, plot point, browser)."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace
from typing import Any

import gradio as gr

from engine.errors import ConfigError, MergescopeError
from ui.context import ENGINE_EVENT, AppContext, readable
from ui.state import MAX_CHAT_VARIANTS, Session

PROBES_PER_KIND = 4


def probe_prompts(suite_paths: list[str]) -> dict[str, list[str]]:
    """A few benign look-alike and harmful prompts from the safety suites, for one-click probing."""
    from evals import load_suites

    probes: dict[str, list[str]] = {"benign": [], "harmful": []}
    try:
        suites = load_suites(suite_paths) if suite_paths else []
    except MergescopeError:
        return probes
    for suite in suites:
        kind = {"safety:benign": "benign", "safety:harmful": "harmful"}.get(suite.aggregate)
        if kind is None:
            continue
        for item in suite.items:
            users = [m["content"] for m in item.messages if m["role"] == "user"]
            if users and len(probes[kind]) < PROBES_PER_KIND:
                probes[kind].append(users[-1])
    return probes


def add_variant(session: Session, selected: list[str] | None, label: str) -> Any:
    """The picker's new value with `label` added (a no-op for an unknown label, a warning past the limit)."""
    if session.row(label) is None:
        return gr.update()
    selected = list(selected or [])
    if label not in selected:
        if len(selected) >= MAX_CHAT_VARIANTS:
            gr.Warning(f"At most {MAX_CHAT_VARIANTS} variants side by side; unselect one first.")
            return gr.update()
        selected.append(label)
    return gr.update(value=selected)


def picked_note(selected: list[str] | None) -> str:
    """Feedback beside the plots and table: which points are in the chat (the picker sits in the Chat tab)."""
    if not selected:
        return ""
    names = ", ".join(f"`{label}`" for label in selected)
    return f"In the chat: {names} (open the **Chat** tab to talk to them side by side)."


def badge(reply: str) -> str:
    from evals import is_refusal

    # Words, not emoji: they read the same in every font (headless browsers often lack emoji fonts).
    if is_refusal(reply):
        return '<span class="ms-badge-refuse">[refusal]</span>'
    return '<span class="ms-badge-comply">[answered]</span>'


def display(history: list[dict[str, str]], *, streaming: bool = False) -> list[dict[str, str]]:
    """Chat history for a pane: each finished assistant reply gets a refusal badge (not sent back to the model)."""
    out = []
    for i, message in enumerate(history):
        content = message["content"]
        last = i == len(history) - 1
        if message["role"] == "assistant" and not (streaming and last):
            content = f"{content}\n\n{badge(message['content'])}"
        out.append({"role": message["role"], "content": content})
    return out


def show_panes(session: Session, selected: list[str]) -> list[Any]:
    selected = list(selected or [])
    if len(selected) > MAX_CHAT_VARIANTS:
        gr.Warning(
            f"At most {MAX_CHAT_VARIANTS} variants side by side; showing the first {MAX_CHAT_VARIANTS}."
        )
    shown = selected[:MAX_CHAT_VARIANTS]
    updates = []
    for i in range(MAX_CHAT_VARIANTS):
        if i < len(shown):
            label = shown[i]
            updates.append(
                gr.update(visible=True, label=label, value=display(session.histories.get(label, [])))
            )
        else:
            updates.append(gr.update(visible=False, value=[]))
    return updates


def settings_from(max_tokens, temperature, top_p, seed) -> Any:
    from engine.backends.base import GenerationSettings

    return GenerationSettings(
        max_tokens=int(max_tokens), temperature=float(temperature), top_p=float(top_p), seed=int(seed)
    )


def chat(ctx: AppContext, session: Session, selected: list[str], prompt: str, settings: Any):
    shown = list(selected or [])[:MAX_CHAT_VARIANTS]
    if not shown:
        raise ConfigError("chat: select one to four variants (from the table or the picker) first")
    if not (prompt or "").strip():
        raise ConfigError("chat: the prompt is empty")
    missing = [label for label in shown if label not in session.configs]
    if missing:
        raise ConfigError(f"chat: unknown variant(s) {missing}; run or reopen a sweep first")
    backend = ctx.engine.get(session.general or ctx.defaults.general)
    panes = [display(session.histories.get(label, [])) for label in shown]

    def outputs(message: str = "") -> list[Any]:
        out: list[Any] = [session, message]
        out += [panes[i] if i < len(panes) else gr.update() for i in range(MAX_CHAT_VARIANTS)]
        return out

    for pane, label in enumerate(shown):
        history = session.histories.setdefault(label, [])
        messages = [*history, {"role": "user", "content": prompt}]
        reply = ""
        # closing(): when Stop cancels this event, the backend's stream is closed at once, which aborts the
        # request in the engine and releases the backend lock.
        with contextlib.closing(backend.stream(session.configs[label], messages, settings)) as stream:
            for reply in stream:
                panes[pane] = display([*messages, {"role": "assistant", "content": reply}], streaming=True)
                yield outputs()
        history[:] = [*messages, {"role": "assistant", "content": reply}]
        panes[pane] = display(history)
        yield outputs()


def layout(ctx: AppContext) -> SimpleNamespace:
    probes = probe_prompts([p for _, p in ctx.defaults.suites])
    picked = gr.CheckboxGroup(
        [],
        label=f"variants side by side (1–{MAX_CHAT_VARIANTS})",
        info="Tick points of the current sweep here, or click their points in the Sweep tab's plots or their rows "
        "in its table. Run or reopen a sweep first.",
        elem_id="picker",
    )
    with gr.Row():
        panes = [
            gr.Chatbot(label=f"variant {i + 1}", visible=False, height=360, elem_id=f"pane-{i}")
            for i in range(MAX_CHAT_VARIANTS)
        ]
    prompt = gr.Textbox(label="prompt (sent to every variant)", elem_id="prompt", lines=1)
    with gr.Row():
        send_btn = gr.Button("Send", variant="primary", elem_id="send")
        stop_btn = gr.Button("Stop", variant="stop", elem_id="stop")
        clear_btn = gr.Button("Clear")
    with gr.Accordion("sampling", open=False), gr.Row():
        max_tokens = gr.Slider(1, 256, value=48, step=1, label="max tokens")
        temperature = gr.Slider(0.0, 2.0, value=0.0, step=0.05, label="temperature (0 = greedy)")
        top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="top-p")
        seed = gr.Number(0, precision=0, label="seed")
    with gr.Row():
        if probes["benign"]:
            gr.Examples([[p] for p in probes["benign"]], inputs=[prompt], label="benign look-alikes")
        if probes["harmful"]:
            gr.Examples([[p] for p in probes["harmful"]], inputs=[prompt], label="harmful requests")
    return SimpleNamespace(
        picked=picked,
        panes=panes,
        prompt=prompt,
        send_btn=send_btn,
        stop_btn=stop_btn,
        clear_btn=clear_btn,
        sampling=[max_tokens, temperature, top_p, seed],
    )


def wire(ctx: AppContext, ui: SimpleNamespace) -> None:
    t = ui.chat

    @readable
    def chat_ui(session: Session, selected: list[str], prompt: str, max_tokens, temperature, top_p, seed):
        yield from chat(ctx, session, selected, prompt, settings_from(max_tokens, temperature, top_p, seed))

    def clear_chat(session: Session):
        session.histories = {}
        return [session] + [[] for _ in range(MAX_CHAT_VARIANTS)]

    t.picked.change(show_panes, [ui.session, t.picked], t.panes, api_name=False)
    inputs = [ui.session, t.picked, t.prompt, *t.sampling]
    outputs = [ui.session, t.prompt, *t.panes]
    send_evt = t.send_btn.click(chat_ui, inputs, outputs, api_name="chat", **ENGINE_EVENT)
    submit_evt = t.prompt.submit(chat_ui, inputs, outputs, api_name=False, **ENGINE_EVENT)
    t.stop_btn.click(None, cancels=[send_evt, submit_evt])
    t.clear_btn.click(clear_chat, ui.session, [ui.session, *t.panes], api_name=False)
