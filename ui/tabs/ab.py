"""A/B tab: two variants of the sweep answer one prompt (typed, or drawn from one of the sweep's suites) as "A"
and "B" in random order; the user votes A / B / tie / both bad; then the names are revealed. Votes go into the
store with the prompt and both replies; the Bradley–Terry strength per variant (engine.bradley_terry) is plotted
against ω beside the automatic scores; votes export as JSONL."""

from __future__ import annotations

import html
import random
from types import SimpleNamespace
from typing import Any

import gradio as gr

from engine.bradley_terry import BOTH_BAD, TIE, VERDICTS, WIN_A, WIN_B, strengths
from engine.errors import ConfigError
from engine.votes import VoteStore, vote_triples
from ui import figures
from ui.context import ENGINE_EVENT, AppContext, readable
from ui.state import Session

VERDICT_TEXT = {WIN_A: "A is better", WIN_B: "B is better", TIE: "tie", BOTH_BAD: "both bad"}
AB_MAX_TOKENS = 48
_rng = random.SystemRandom()  # the side each variant appears on must not be guessable


def draw_prompt(ctx: AppContext, session: Session, suite: str | None) -> str:
    """A random item's prompt from one of the sweep's suites (any of them when `suite` is empty)."""
    from engine.behaviour import suite_prompts

    if not session.sweep_id:
        raise ConfigError("A/B: run or reopen a sweep first")
    with ctx.open_store() as store:
        spec = next((s["spec"] for s in store.sweeps() if s["id"] == session.sweep_id), {})
    prompts = suite_prompts(spec.get("suites") or [])
    pool = [p for name, items in prompts.items() if not suite or name == suite for p in items.values()]
    if not pool:
        raise ConfigError(
            f"A/B: no prompts found in suite {suite!r}" if suite else "A/B: the sweep's suites are gone"
        )
    return _rng.choice(pool)


def ask(ctx: AppContext, session: Session, first: str, second: str, prompt: str) -> tuple[str, str]:
    """Both variants answer `prompt`; returns the replies in the (random) A/B order kept in the session."""
    from engine.backends.base import GenerationSettings

    if not first or not second or first == second:
        raise ConfigError("A/B: choose two different variants of the sweep")
    missing = [v for v in (first, second) if v not in session.configs]
    if missing:
        raise ConfigError(f"A/B: unknown variant(s) {missing}; run or reopen a sweep first")
    if not (prompt or "").strip():
        raise ConfigError("A/B: the prompt is empty (type one or draw one from a suite)")
    a, b = _rng.sample([first, second], 2)
    backend = ctx.engine.get(session.general or ctx.defaults.general)
    settings = GenerationSettings(max_tokens=AB_MAX_TOKENS)
    messages = [[{"role": "user", "content": prompt}]]
    reply_a = backend.generate(session.configs[a], messages, settings)[0]
    reply_b = backend.generate(session.configs[b], messages, settings)[0]
    session.ab = {"a": a, "b": b, "prompt": prompt, "reply_a": reply_a, "reply_b": reply_b}
    return reply_a, reply_b


def vote(ctx: AppContext, session: Session, verdict: str) -> str:
    """Record the verdict on the pending A/B pair and reveal the names."""
    pending = session.ab
    if not pending or not session.sweep_id:
        raise ConfigError("A/B: ask both variants first; each answer pair takes one vote")
    with VoteStore(ctx.store_path) as votes:
        votes.add(
            session.sweep_id,
            pending["prompt"],
            pending["a"],
            pending["b"],
            pending["reply_a"],
            pending["reply_b"],
            verdict,
        )
    session.ab = {}
    return (
        f"<div id='ab-revealed'>Your vote: <b>{VERDICT_TEXT[verdict]}</b>. "
        f"A was <b>{html.escape(pending['a'])}</b>, B was <b>{html.escape(pending['b'])}</b>.</div>"
    )


def strength_view(ctx: AppContext, session: Session, metric: str | None) -> tuple[Any, str]:
    """The strength plot and a line counting the sweep's votes."""
    if not session.sweep_id:
        return figures.strength_figure([], []), ""
    with VoteStore(ctx.store_path) as store:
        votes = store.votes(session.sweep_id)
    fitted = strengths(vote_triples(votes), session.labels()) if votes else []
    metric = figures.default_metric(session.rows, session.skills, metric)
    return figures.strength_figure(
        fitted, session.rows, metric
    ), f"{len(votes)} votes on sweep {session.sweep_id}"


def export_votes(ctx: AppContext, session: Session) -> str:
    if not session.sweep_id:
        raise ConfigError("A/B: no sweep yet, so no votes to export")
    with VoteStore(ctx.store_path) as store:
        return str(store.export_jsonl(session.sweep_id, ctx.downloads / f"votes-{session.sweep_id}.jsonl"))


def layout(ctx: AppContext) -> SimpleNamespace:
    gr.Markdown(
        "Two variants answer the same prompt as **A** and **B**, in random order; vote, then see which was which."
    )
    # Custom values allowed: API callers name suites and points directly; the handlers check them against the store.
    with gr.Row():
        first = gr.Dropdown([], label="one variant", elem_id="ab-first", allow_custom_value=True)
        second = gr.Dropdown([], label="the other", elem_id="ab-second", allow_custom_value=True)
        suite = gr.Dropdown(
            [], label="draw prompts from (empty: any suite)", elem_id="ab-suite", allow_custom_value=True
        )
    prompt = gr.Textbox(label="prompt", elem_id="ab-prompt")
    with gr.Row():
        draw_btn = gr.Button("Draw a prompt", elem_id="ab-draw")
        ask_btn = gr.Button("Ask both", variant="primary", elem_id="ab-ask")
    with gr.Row():
        reply_a = gr.Textbox(label="A", lines=4, interactive=False, elem_id="ab-reply-a")
        reply_b = gr.Textbox(label="B", lines=4, interactive=False, elem_id="ab-reply-b")
    with gr.Row():
        vote_btns = {v: gr.Button(VERDICT_TEXT[v], elem_id=f"ab-vote-{v}") for v in VERDICTS}
    reveal = gr.HTML(elem_id="ab-reveal")
    with gr.Row():
        count = gr.Markdown(elem_id="ab-count")
        export_btn = gr.Button("Votes as JSONL", elem_id="ab-export")
        export_file = gr.File(label="votes", elem_id="ab-export-file")
    strength_plot = gr.Plot(
        figures.strength_figure([], []), label="vote strength", elem_id="ab-strength-plot"
    )
    return SimpleNamespace(**{k: v for k, v in locals().items() if k != "ctx"})


def wire(ctx: AppContext, ui: SimpleNamespace) -> None:
    t = ui.ab

    @readable
    def draw_ui(session: Session, suite):
        return draw_prompt(ctx, session, suite)

    @readable
    def ask_ui(session: Session, first, second, prompt):
        reply_a, reply_b = ask(ctx, session, first, second, prompt)
        return session, reply_a, reply_b, ""

    def vote_handler(verdict: str):
        @readable
        def vote_ui(session: Session, metric):
            revealed = vote(ctx, session, verdict)
            plot, count = strength_view(ctx, session, metric)
            return session, revealed, plot, count

        return vote_ui

    @readable
    def export_ui(session: Session):
        return export_votes(ctx, session)

    def refresh(session: Session, metric):
        labels = session.labels()
        variants = [r["label"] for r in session.rows if r["kind"] == "variant"] or labels
        plot, count = strength_view(ctx, session, metric)
        with ctx.open_store() as store:
            from engine.behaviour import suite_names

            known = {s["id"] for s in store.sweeps()}
            suites = suite_names(store.sweep_points(session.sweep_id)) if session.sweep_id in known else []
        return (
            gr.update(choices=labels, value=variants[0] if variants else None),
            gr.update(choices=labels, value=variants[-1] if variants else None),
            gr.update(choices=["", *suites], value=""),
            plot,
            count,
        )

    ui.sweep.status.change(
        refresh,
        [ui.session, ui.sweep.y_metric],
        [t.first, t.second, t.suite, t.strength_plot, t.count],
        api_name=False,
    )
    t.draw_btn.click(draw_ui, [ui.session, t.suite], t.prompt, api_name="ab_draw")
    # Clear the last pair and its reveal first: a blind pair must not show the previous answers (or names) while
    # the new ones are generated, and a vote is only possible on the pair on screen.
    t.ask_btn.click(lambda: ("", "", ""), None, [t.reply_a, t.reply_b, t.reveal], api_name=False).then(
        ask_ui,
        [ui.session, t.first, t.second, t.prompt],
        [ui.session, t.reply_a, t.reply_b, t.reveal],
        api_name="ab_ask",
        **ENGINE_EVENT,
    )
    for verdict, btn in t.vote_btns.items():
        btn.click(
            vote_handler(verdict),
            [ui.session, ui.sweep.y_metric],
            [ui.session, t.reveal, t.strength_plot, t.count],
            api_name=f"ab_vote_{verdict}",
        )
    t.export_btn.click(export_ui, ui.session, t.export_file, api_name="ab_export")
