"""Sweep tab: the sweep's settings, running it (or reopening it from the store), the tradeoff and over-refusal
plots, the grid heatmaps and the table of every point."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gradio as gr
import pandas as pd
import yaml

from engine.errors import ConfigError, MergescopeError
from engine.store import stable_hash
from ui import figures
from ui.context import AppContext, readable
from ui.page_js import PLOT_CLICK_BOX
from ui.paths import parse_named_lines
from ui.state import Session, row_from_result
from ui.tabs import chat

MAX_IMPORT_BYTES = 2 * 1024 * 1024


def method_names() -> list[str]:
    try:
        from engine.methods import METHODS
    except ImportError:  # the methods package is not in this checkout yet
        return ["task_arithmetic"]
    return sorted(METHODS)


def sweep_spec(
    ctx: AppContext,
    base,
    general,
    skills_text,
    refs_text,
    method,
    params_text,
    weights,
    grid,
    suites,
    extra_suites,
    use_refs,
    heur,
    lm_eval_text="",
    composites_text="",
):
    """The page's fields (in `spec_inputs` order) as an engine `SweepSpec`, every path through the policy."""
    from engine.backends.base import GenerationSettings
    from engine.sweep import SweepSpec, parse_weights

    policy = ctx.policy
    skills = {
        n: policy.checkpoint(p, field=f"skill {n}")
        for n, p in parse_named_lines(skills_text, field="skills").items()
    }
    refs = {
        n: policy.checkpoint(p, field=f"reference {n}")
        for n, p in parse_named_lines(refs_text, field="references").items()
    }
    try:
        params = yaml.safe_load(params_text or "{}") or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"method parameters: not YAML ({exc})") from exc
    if not isinstance(params, dict):
        raise ConfigError("method parameters: expected a mapping such as {density: 0.5}")
    chosen = [*(suites or []), *(line.strip() for line in (extra_suites or "").splitlines())]
    suite_paths = [str(policy.existing(s, field="eval suite")) for s in chosen if s]
    suite_paths += lm_eval_refs(ctx, lm_eval_text)
    return SweepSpec(
        base=policy.checkpoint(base, field="base"),
        general=policy.checkpoint(general, field="general"),
        skills=skills,
        method=method or "task_arithmetic",
        method_params=params,
        weights=parse_weights(weights or ctx.default_weights),
        grid=bool(grid),
        suites=suite_paths,
        references=refs if use_refs else {},
        settings=GenerationSettings(),
        standard_references=bool(use_refs),
        dataset_sizes=ctx.defaults.dataset_sizes,
        heuristic_point=bool(heur),
        composites=composite_lines(composites_text),
    )


def lm_eval_refs(ctx: AppContext, text: str | None) -> list[str]:
    """The lm-eval field's entries (one per line or comma list, `lm-eval:` optional): `TASK`, `TASK@fewshot=5,
    limit=50` or a task YAML inside the allowed roots (`path/task.yaml@limit=10`), as `lm-eval:` suite refs."""
    from evals.lm_eval_suite import PREFIX, format_options, is_option_part, join_option_parts, split_options

    refs = []
    for line in (text or "").splitlines():
        parts = [p.strip() for p in line.split(",") if p.strip()]
        parts = [p if p.startswith(PREFIX) or is_option_part(p) else f"{PREFIX}{p}" for p in parts]
        for entry in join_option_parts(parts):
            if not entry.startswith(PREFIX):
                raise ConfigError(
                    f"lm-eval tasks: {entry!r} is not a task (expected TASK or TASK@fewshot=N,limit=N)"
                )
            target, options = split_options(entry)
            if Path(target).suffix in (".yaml", ".yml"):  # a local task file: only inside the roots
                target = str(ctx.policy.existing(target, field="lm-eval task file"))
            refs.append(f"{PREFIX}{target}{format_options(options)}")
    return refs


def composite_lines(text: str | None) -> dict[str, list[str]]:
    """The composites field: one `NAME=SUITE,SUITE,...` per line (suite names, lm-eval entries, aggregates)."""
    from evals.composite import parse_composite

    composites: dict[str, list[str]] = {}
    for line in (text or "").splitlines():
        if line.strip():
            name, members = parse_composite(line.strip())
            if name in composites:
                raise ConfigError(f"composite axes: {name!r} is defined twice")
            composites[name] = members
    return composites


# --- pure helpers ----------------------------------------------------------------------------------------------
def results_table(session: Session) -> pd.DataFrame:
    header, body = figures.table_rows(session.rows)
    return pd.DataFrame(body, columns=header)


def x_metric(session: Session) -> str:
    """The session's tradeoff x axis if its rows have it, else the pooled general score."""
    options = figures.axis_options(figures.axis_rows(session.rows))
    return session.x_metric if session.x_metric in options else "general"


def trade_figure(session: Session, y_metric: str | None) -> Any:
    rows = figures.axis_rows(session.rows)
    return figures.tradeoff_figure(rows, y_metric, imported=session.imported, x=x_metric(session))


def session_figures(session: Session, y_metric: str | None) -> tuple[Any, Any, Any]:
    return (
        trade_figure(session, y_metric),
        figures.safety_figure(session.rows, imported=session.imported),
        figures.grid_heatmaps(session.rows, session.skills if len(session.skills) == 2 else ("ω1", "ω2")),
    )


def kept_histories(session: Session, sweep_id: str) -> dict[str, list[dict[str, str]]]:
    # Chats survive re-running or reopening the same sweep; another sweep's "ω=0.5" is another model.
    return session.histories if session.sweep_id == sweep_id else {}


def sweep_outputs(
    session: Session, y_metric: str | None, status: str, picked: list[str] | None = None
) -> tuple:
    """Values for `SWEEP_OUTPUTS`, in order. A new sweep clears the chat picker unless `picked` is given."""
    y_metric = figures.default_metric(session.rows, session.skills, y_metric)
    trade, safety, heat = session_figures(session, y_metric)
    labels = session.labels()
    picked = [p for p in (picked or []) if p in labels]
    return (
        session,
        trade,
        safety,
        heat,
        results_table(session),
        gr.update(
            choices=[(figures.metric_title(c), c) for c in figures.skill_metrics(session.rows)],
            value=y_metric,
        ),
        gr.update(choices=x_choices(session), value=x_metric(session)),
        gr.update(choices=labels, value=picked),
        gr.update(choices=labels, value=labels[0] if labels else None),
        status,
    )


def x_choices(session: Session) -> list[tuple[str, str]]:
    """The x axis picker: the general score, composites, the other aggregates, every suite's own score."""
    options = figures.axis_options(figures.axis_rows(session.rows)) or ["general"]
    return [(figures.metric_title(c), c) for c in options]


def session_for(prepared: Any, old: Session, sweep_id: str) -> Session:
    """A fresh session on a prepared sweep, keeping the chats (if it is the same sweep) and imported references."""
    session = Session(
        skills=list(prepared.spec.skill_paths),
        histories=kept_histories(old, sweep_id),
        sweep_id=sweep_id,
        general=prepared.spec.general,
        imported=old.imported,
        x_metric=old.x_metric,
    )
    session.configs = {p.label: p.config for p in prepared.points}
    return session


def load_stored(ctx: AppContext, session: Session, prepared: Any) -> tuple[Session, bool]:
    """The session with a stored sweep's completed points, and whether the store knows the sweep at all."""
    sweep_id = stable_hash(prepared.store_spec())[:16]
    with ctx.open_store() as store:
        known = {s["id"] for s in store.sweeps()}
        points = store.sweep_points(sweep_id) if sweep_id in known else []
    if sweep_id not in known:
        return session, False
    session = session_for(prepared, session, sweep_id)
    for point in points:
        if point.get("scores") is not None:
            session.upsert({**point, "cached": True})
    return session, True


def clicked_label(payload: str) -> str:
    """The label in the click listener's JSON (a bare label is accepted too, for API callers)."""
    try:
        value = json.loads(payload or "")
    except json.JSONDecodeError:
        return (payload or "").strip()
    return str(value.get("label", "")) if isinstance(value, dict) else str(value)


def import_results(session: Session, path: str | None, y_metric: str | None) -> tuple:
    """Read a reference results CSV into the session and redraw the two scatter plots with it."""
    from engine.imported import read_reference_csv

    if not path:
        session.imported = []
        note = ""
    else:
        file = Path(path)
        if file.stat().st_size > MAX_IMPORT_BYTES:
            raise ConfigError(
                f"{file.name}: larger than {MAX_IMPORT_BYTES // 1024} KiB; not a results table?"
            )
        try:
            text = file.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{file.name}: cannot be read as UTF-8 text ({exc})") from exc
        session.imported = read_reference_csv(text, source=file.name)
        names = ", ".join(f"`{r['label']}`" for r in session.imported)
        note = f"Imported {len(session.imported)} reference points from `{file.name}`: {names} (hollow grey markers)."
    y_metric = figures.default_metric(session.rows, session.skills, y_metric)
    trade, safety, _ = session_figures(session, y_metric)
    return session, trade, safety, note


# --- events ----------------------------------------------------------------------------------------------------
def run(ctx: AppContext, session: Session, y_metric, inputs, progress):
    from engine.sweep import prepare_sweep, run_sweep

    spec = sweep_spec(ctx, *inputs)
    prepared = prepare_sweep(spec)
    sweep_id = stable_hash(prepared.store_spec())[:16]
    session = session_for(prepared, session, sweep_id)
    total = len(prepared.points)
    # Suites whose prompts do not all fit the model's context: said with every status, under it.
    notes = "".join(f"\n\n⚠ context: {line}" for line in prepared.fit_warnings())
    holder = ctx.sweep_engine
    progress((0, total), desc="sweeping" if holder.started else "starting the engine")
    yield sweep_outputs(session, y_metric, f"Sweeping {total} points…{notes}")
    backend = holder.get(spec.general)
    with ctx.open_store() as store:
        for i, result in enumerate(run_sweep(prepared, backend, store)):
            session.upsert(row_from_result(result))
            progress((i + 1, total), desc=f"{result.label}" + (" (stored)" if result.cached else ""))
            yield sweep_outputs(
                session, y_metric, f"{i + 1}/{total} points done (last: {result.label}){notes}"
            )
    cached = sum(1 for r in session.rows if r.get("cached"))
    yield sweep_outputs(
        session, y_metric, f"Done: {total} points ({cached} from the store) — sweep {session.sweep_id}{notes}"
    )


def reopen(ctx: AppContext, session: Session, y_metric, inputs) -> tuple:
    """Show a stored sweep with these inputs without recomputing anything."""
    from engine.sweep import prepare_sweep

    session, known = load_stored(ctx, session, prepare_sweep(sweep_spec(ctx, *inputs)))
    if not known:
        return sweep_outputs(session, y_metric, "No stored results for these settings yet: press Run sweep.")
    return sweep_outputs(
        session, y_metric, f"Loaded {len(session.rows)} stored points of sweep {session.sweep_id}"
    )


def open_page(ctx: AppContext, session: Session, y_metric, inputs) -> tuple:
    """What a freshly opened page shows: the stored results of its default settings, without recomputation."""
    try:
        return reopen(ctx, session, y_metric, inputs)
    except MergescopeError as exc:
        # On page open a missing or incomplete set of fields is normal, not an error worth a pop-up.
        return sweep_outputs(session, y_metric, f"Fill in the checkpoints to start ({exc}).")


def layout(ctx: AppContext) -> SimpleNamespace:
    d = ctx.defaults
    with gr.Row():
        method = gr.Dropdown(method_names(), value="task_arithmetic", label="merge method")
        method_params = gr.Textbox(
            "{}", label="method parameters (YAML mapping)", placeholder="{density: 0.5}"
        )
        weights = gr.Textbox(
            ctx.default_weights, label="ω values (START:STOP:STEP or a,b,c)", elem_id="weights"
        )
        grid = gr.Checkbox(False, label="2-D grid (two skills)")
    with gr.Row():
        suites = gr.CheckboxGroup(
            d.suite_choices, value=[p for _, p in d.suites], label="eval suites", elem_id="suites", scale=2
        )
        extra_suites = gr.Textbox(
            lines=1,
            label="more eval suites (a suite folder, or a folder of suites, per line)",
            elem_id="extra-suites",
            scale=1,
        )
    with gr.Row():
        lm_eval = gr.Textbox(
            "",  # an initial value makes the field optional for API callers (older scripts send 12 fields)
            lines=1,
            label="lm-evaluation-harness tasks (per line or comma list; options after @)",
            placeholder="arc_easy@fewshot=5,limit=50  or  path/to/task.yaml",
            elem_id="lm-eval-tasks",
        )
        composites = gr.Textbox(
            "",
            lines=1,
            label="composite axes: NAME=SUITE,SUITE per line (the mean of those scores)",
            placeholder="general_avg=demo-general,lm-eval:arc_easy@fewshot=5,limit=50",
            elem_id="composites",
        )
    with gr.Row():
        use_refs = gr.Checkbox(True, label="evaluate reference models", elem_id="use-refs")
        heuristic = gr.Checkbox(True, label="add the |D|/|G| point", elem_id="heuristic")
        run_btn = gr.Button("Run sweep", variant="primary", elem_id="run-sweep")
        reopen_btn = gr.Button("Show stored results", elem_id="reopen")
    with gr.Row(equal_height=True):
        status = gr.Markdown(elem_id="sweep-status")
        # Each picker in its own column: side by side (adjacent form fields would be stacked in one box).
        with gr.Column(scale=0, min_width=240):
            x_axis = gr.Dropdown(
                [(figures.metric_title("general"), "general")],
                value="general",
                label="tradeoff x axis",
                elem_id="x-metric",
            )
        with gr.Column(scale=0, min_width=240):
            y_metric = gr.Dropdown([], label="tradeoff y axis", elem_id="y-metric")
    with gr.Row():
        trade_plot = gr.Plot(figures.tradeoff_figure([]), label="tradeoff", elem_id="tradeoff-plot")
        safety_plot = gr.Plot(figures.safety_figure([]), label="over-refusal", elem_id="safety-plot")
    gr.Markdown("Click a point of a plot (or a row of the table) to add that variant to the **Chat** tab.")
    with gr.Accordion("reference results from a CSV (variant, ω, metric columns)", open=False):
        with gr.Row():
            import_file = gr.File(label="results CSV", file_types=[".csv"], elem_id="import-csv")
            import_clear = gr.Button("Remove imported points", elem_id="import-clear")
        import_note = gr.Markdown(elem_id="import-note")
    with gr.Accordion("2-D grid heatmaps", open=False) as heat_box:
        heat_plot = gr.Plot(figures.grid_heatmaps([]), label="grid", elem_id="grid-plot")
    table = gr.Dataframe(
        label="every point (click a row to add it to the chat)", interactive=False, elem_id="results-table"
    )
    picked_note = gr.Markdown(elem_id="picked-note")
    # Filled by the page's plotly click listener (ui.page_js) with {"label": ..., "nonce": ...}.
    plot_click = gr.Textbox(visible="hidden", elem_id=PLOT_CLICK_BOX, label="clicked point")
    return SimpleNamespace(
        plot_click=plot_click,
        import_file=import_file,
        import_clear=import_clear,
        import_note=import_note,
        method=method,
        method_params=method_params,
        weights=weights,
        grid=grid,
        suites=suites,
        extra_suites=extra_suites,
        lm_eval=lm_eval,
        composites=composites,
        x_axis=x_axis,
        use_refs=use_refs,
        heuristic=heuristic,
        run_btn=run_btn,
        reopen_btn=reopen_btn,
        status=status,
        y_metric=y_metric,
        trade_plot=trade_plot,
        safety_plot=safety_plot,
        heat_box=heat_box,
        heat_plot=heat_plot,
        table=table,
        picked_note=picked_note,
    )


def spec_inputs(ui: SimpleNamespace) -> list:
    """The fields a sweep spec is built from, in `sweep_spec`'s order."""
    c, s = ui.ckpt, ui.sweep
    return [
        c.base,
        c.general,
        c.skills,
        c.references,
        s.method,
        s.method_params,
        s.weights,
        s.grid,
        s.suites,
        s.extra_suites,
        s.use_refs,
        s.heuristic,
        s.lm_eval,
        s.composites,
    ]


def sweep_output_components(ui: SimpleNamespace) -> list:
    """What `sweep_outputs` fills, in order."""
    s = ui.sweep
    return [
        ui.session,
        s.trade_plot,
        s.safety_plot,
        s.heat_plot,
        s.table,
        s.y_metric,
        s.x_axis,
        ui.chat.picked,
        ui.export.label,
        s.status,
    ]


def wire(ctx: AppContext, ui: SimpleNamespace) -> None:
    s = ui.sweep

    @readable
    def run_sweep_ui(session: Session, y_metric, *inputs, progress=gr.Progress()):  # noqa: B008
        yield from run(ctx, session, y_metric, inputs, progress)

    @readable
    def reopen_ui(session: Session, y_metric, *inputs):
        return reopen(ctx, session, y_metric, inputs)

    def two_skills_for_grid(on: bool, skills_text: str):
        """Ticking the 2-D grid with fewer than two skills listed fills in the family's first two."""
        try:
            listed = parse_named_lines(skills_text, field="skills")
        except MergescopeError:
            return gr.update()
        family_skills = [line for line in ctx.defaults.other_skills.splitlines() if line.strip()]
        if not on or len(listed) >= 2 or len(family_skills) < 2:
            return gr.update()
        return "\n".join(family_skills[:2])

    def redraw(session: Session, y_metric: str | None):
        return trade_figure(session, y_metric)

    def pick_x(session: Session, x: str | None, y_metric: str | None):
        session.x_metric = x or "general"
        return session, trade_figure(session, y_metric)

    def pick_from_table(session: Session, selected: list[str], evt: gr.SelectData):
        # The row's own label cell, not its index: the table can be sorted in the page.
        cells = evt.row_value or []
        label = str(cells[0]).removesuffix(" ★") if cells else ""
        return chat.add_variant(session, selected, label)

    def pick_from_plot(session: Session, selected: list[str], clicked: str):
        return chat.add_variant(session, selected, clicked_label(clicked))

    @readable
    def import_ui(session: Session, path, y_metric):
        return import_results(session, path, y_metric)

    inputs = [ui.session, s.y_metric, *spec_inputs(ui)]
    outputs = sweep_output_components(ui)
    s.run_btn.click(run_sweep_ui, inputs, outputs, api_name="sweep", **ctx.sweep_event)
    s.reopen_btn.click(reopen_ui, inputs, outputs, api_name="reopen")
    s.grid.change(lambda on: gr.update(open=bool(on)), s.grid, s.heat_box, api_name=False)
    s.grid.change(two_skills_for_grid, [s.grid, ui.ckpt.skills], ui.ckpt.skills, api_name=False)
    # `.input`, not `.change`: a sweep's own yields also set this dropdown, and a redraw fired by them could land
    # after the sweep's last plot and put an older set of points back on screen.
    s.y_metric.input(redraw, [ui.session, s.y_metric], s.trade_plot, api_name=False)
    s.x_axis.input(pick_x, [ui.session, s.x_axis, s.y_metric], [ui.session, s.trade_plot], api_name="x_axis")
    s.table.select(pick_from_table, [ui.session, ui.chat.picked], ui.chat.picked, api_name=False)
    import_outputs = [ui.session, s.trade_plot, s.safety_plot, s.import_note]
    s.import_file.upload(
        import_ui, [ui.session, s.import_file, s.y_metric], import_outputs, api_name="import_csv"
    )
    s.import_clear.click(
        lambda session, y: import_results(session, None, y),
        [ui.session, s.y_metric],
        import_outputs,
        api_name=False,
    )
    s.plot_click.change(
        pick_from_plot, [ui.session, ui.chat.picked, s.plot_click], ui.chat.picked, api_name="plot_click"
    )
    ui.chat.picked.change(chat.picked_note, ui.chat.picked, s.picked_note, api_name=False)
