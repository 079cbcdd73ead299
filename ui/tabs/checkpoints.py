"""Checkpoints tab: the base, general and skill checkpoints, the compatibility report, task-vector diagnostics."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from ui import figures
from ui.context import AppContext, readable
from ui.paths import display_path, parse_named_lines


def check_compat(ctx: AppContext, base: str, general: str, skills_text: str, refs_text: str) -> str:
    from engine.checkpoint import open_checkpoint
    from engine.compat import compatibility_report

    policy = ctx.policy
    refs = {
        "base": policy.checkpoint(base, field="base"),
        "general": policy.checkpoint(general, field="general"),
    }
    for n, p in parse_named_lines(skills_text, field="skills").items():
        refs[f"skill {n}"] = policy.checkpoint(p, field=f"skill {n}")
    for n, p in parse_named_lines(refs_text, field="references").items():
        refs[f"reference {n}"] = policy.checkpoint(p, field=f"reference {n}")
    report = compatibility_report([open_checkpoint(p) for p in refs.values()])
    verdict = "Compatible" if report.ok else "NOT compatible"
    listing = "\n".join(
        f"- **{role}**: `{display_path(p) if Path(p).exists() else p}`" for role, p in refs.items()
    )
    return f"### {verdict}\n{listing}\n\n```\n{report.format()}\n```"


def diagnostics(ctx: AppContext, base: str, skills_text: str, progress: gr.Progress) -> tuple:
    from engine.diagnostics import task_vector_diagnostics

    skills = {
        n: ctx.policy.checkpoint(p, field=f"skill {n}")
        for n, p in parse_named_lines(skills_text, field="skills").items()
    }
    diag = task_vector_diagnostics(
        ctx.policy.checkpoint(base, field="base"),
        skills,
        progress=lambda i, n: progress((i, n), desc="reading tensors"),
    )
    data = diag.to_dict()
    return figures.norms_figure(data), figures.interference_figure(data), f"```\n{diag.format()}\n```"


def layout(ctx: AppContext) -> SimpleNamespace:
    d = ctx.defaults
    discovered = ctx.policy.discover()
    with gr.Row():
        base = gr.Dropdown(discovered, value=d.base, label="base θ_pre", allow_custom_value=True)
        general = gr.Dropdown(
            discovered, value=d.general, label="general θ_G (engine starts on it)", allow_custom_value=True
        )
    with gr.Row():
        skills = gr.Textbox(
            d.skills,
            lines=2,
            label="skill checkpoints θ_D (NAME=PATH per line)",
            info=("available: " + d.other_skills.replace("\n", "; ")) if d.family else None,
        )
        references = gr.Textbox(
            d.references, lines=2, label="extra reference checkpoints (NAME=PATH per line)"
        )
    with gr.Row():
        check_btn = gr.Button("Check compatibility")
        diag_btn = gr.Button("Task-vector diagnostics")
    compat_md = gr.Markdown(elem_id="compat-report")
    with gr.Row():
        norms_plot = gr.Plot(label="per-layer norms")
        interference_plot = gr.Plot(label="interference")
    diag_md = gr.Markdown()
    return SimpleNamespace(**locals())


def wire(ctx: AppContext, ui: SimpleNamespace) -> None:
    t = ui.ckpt

    @readable
    def check(base: str, general: str, skills_text: str, refs_text: str) -> str:
        return check_compat(ctx, base, general, skills_text, refs_text)

    @readable
    def diag(base: str, skills_text: str, progress=gr.Progress()):  # noqa: B008 - Gradio's injection idiom
        return diagnostics(ctx, base, skills_text, progress)

    inputs = [t.base, t.general, t.skills, t.references]
    t.check_btn.click(check, inputs, t.compat_md, api_name="check")
    t.diag_btn.click(
        diag, [t.base, t.skills], [t.norms_plot, t.interference_plot, t.diag_md], api_name="diagnostics"
    )
    if ctx.defaults.family is not None:
        ui.app.load(check, inputs, t.compat_md, api_name=False)
