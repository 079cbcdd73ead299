"""Export tab: a variant's mergekit YAML, its merged checkpoint (with a model card holding its results), and
the sweep's results as CSV plus the plots as HTML."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gradio as gr

from engine.errors import ConfigError
from engine.store import atomic_write_text
from ui import figures
from ui.context import ENGINE_EVENT, AppContext, readable
from ui.paths import display_path
from ui.state import Session
from ui.tabs.sweep import x_metric

EXPORT_PREFIX = "mergescope-"


def safe_name(label: str) -> str:
    """A file name for a point label: `ω=0.25` -> `omega_0.25`, `ω=(0,1)` -> `omega_0_1`."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label.replace("ω", "omega")).strip("_") or "variant"


def model_card_extra(row: dict[str, Any]) -> str:
    """The variant's eval results as a markdown section for the exported model card."""
    lines = [
        "## Evaluation (mergescope sweep)",
        "",
        f"Variant `{row['label']}` ({row['kind']}).",
        "",
        "| score | value | 95% interval | n |",
        "|---|---|---|---|",
    ]
    for name, s in figures.aggregates(row).items():
        lines.append(f"| {name} | {s['value']:.3f} | [{s['lo']:.3f}, {s['hi']:.3f}] | {s['n']} |")
    suites = ((row.get("scores") or {}).get("scores") or {}).get("suites") or {}
    for name, s in suites.items():
        lines.append(f"| suite {name} | {s['value']:.3f} | [{s['lo']:.3f}, {s['hi']:.3f}] | {s['n']} |")
    return "\n".join(lines) + "\n"


def export_yaml(ctx: AppContext, session: Session, label: str) -> tuple[str, str]:
    """The variant's mergekit YAML: a file to download, and the same text shown in the page."""
    if not label or label not in session.configs:
        raise ConfigError("export: choose a variant of the current sweep first")
    text = session.configs[label].to_yaml()
    path = atomic_write_text(ctx.downloads / f"{safe_name(label)}.yml", text)
    return str(path), text


def export_checkpoint(
    ctx: AppContext, session: Session, label: str, out_dir: str, overwrite: bool, progress
) -> str:
    from engine.export import export_merge

    if not label or label not in session.configs:
        raise ConfigError("export: choose a variant of the current sweep first")
    target = ctx.policy.output_dir(out_dir, field="output folder")
    if target.exists() and not overwrite:
        raise ConfigError(f"output folder {target} already exists: tick 'overwrite' to replace it")
    row = session.row(label) or {"label": label, "kind": "variant"}
    written = export_merge(
        session.configs[label],
        target,
        card_extra=model_card_extra(row),
        overwrite=bool(overwrite),
        progress=lambda i, n: progress((i, n), desc="writing tensors"),
    )
    return f"Wrote `{display_path(written)}` (model card with this variant's results included)."


def export_results(ctx: AppContext, session: Session, y_metric: str | None) -> list[str]:
    from engine.store import points_to_csv

    if not session.rows:
        raise ConfigError("export: no sweep results yet")
    stem = f"sweep-{session.sweep_id or 'results'}"
    csv_path = atomic_write_text(ctx.downloads / f"{stem}.csv", points_to_csv(session.rows))
    html = figures.plot_html(session.rows, y_metric, imported=session.imported, x=x_metric(session))
    html_path = atomic_write_text(ctx.downloads / f"{stem}-plot.html", html)
    return [str(csv_path), str(html_path)]


def layout(ctx: AppContext) -> SimpleNamespace:
    label = gr.Dropdown([], label="variant", elem_id="export-variant", allow_custom_value=True)
    with gr.Row():
        with gr.Column():
            yaml_btn = gr.Button("mergekit YAML", elem_id="export-yaml")
            yaml_file = gr.File(label="YAML file", elem_id="yaml-file")
        yaml_text = gr.Code(language="yaml", label="mergekit YAML", elem_id="yaml-text", lines=8)
    with gr.Row():
        out_dir = gr.Textbox(
            label="write the merged checkpoint to (inside the allowed roots)", elem_id="out-dir"
        )
        overwrite = gr.Checkbox(False, label="overwrite")
        ckpt_btn = gr.Button("Write checkpoint")
    ckpt_md = gr.Markdown()
    with gr.Row():
        results_btn = gr.Button("Sweep results (CSV + plot HTML)")
        results_files = gr.File(label="results", file_count="multiple")
    return SimpleNamespace(
        label=label,
        yaml_btn=yaml_btn,
        yaml_file=yaml_file,
        yaml_text=yaml_text,
        out_dir=out_dir,
        overwrite=overwrite,
        ckpt_btn=ckpt_btn,
        ckpt_md=ckpt_md,
        results_btn=results_btn,
        results_files=results_files,
    )


def wire(ctx: AppContext, ui: SimpleNamespace) -> None:
    t = ui.export

    @readable
    def yaml_ui(session: Session, label: str):
        return export_yaml(ctx, session, label)

    @readable
    def checkpoint_ui(session: Session, label: str, out_dir: str, overwrite: bool, progress=gr.Progress()):  # noqa: B008
        return export_checkpoint(ctx, session, label, out_dir, overwrite, progress)

    @readable
    def results_ui(session: Session, y_metric: str | None):
        return export_results(ctx, session, y_metric)

    def suggest_out_dir(label: str | None, current: str) -> Any:
        # A fresh suggestion per variant, unless the user typed a folder of their own.
        if not label or (current and not Path(current).name.startswith(EXPORT_PREFIX)):
            return gr.update()
        return str(ctx.export_root / "out" / f"{EXPORT_PREFIX}{safe_name(label)}")

    # The variant last added to the chat is the one this tab offers first.
    ui.chat.picked.change(
        lambda sel: gr.update(value=sel[-1]) if sel else gr.update(), ui.chat.picked, t.label, api_name=False
    )
    t.yaml_btn.click(yaml_ui, [ui.session, t.label], [t.yaml_file, t.yaml_text], api_name="export_yaml")
    t.label.change(suggest_out_dir, [t.label, t.out_dir], t.out_dir, api_name=False)
    t.ckpt_btn.click(
        checkpoint_ui,
        [ui.session, t.label, t.out_dir, t.overwrite],
        t.ckpt_md,
        api_name="export_checkpoint",
        **ENGINE_EVENT,
    )
    t.results_btn.click(
        results_ui, [ui.session, ui.sweep.y_metric], t.results_files, api_name="export_results"
    )
