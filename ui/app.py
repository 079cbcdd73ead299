"""The dashboard: checkpoints + compatibility + task-vector diagnostics, a live sweep with tradeoff plots, side-by-side
chat with several variants, export. Thin: every action calls an engine entry point the CLI calls too
(`prepare_sweep`/`run_sweep`, `Backend.stream`, `MergeConfig.to_yaml`, `export_merge`, `task_vector_diagnostics`).

Engine work is serialized: every event that touches the serving engine shares one Gradio queue
(`concurrency_id="engine"`, limit 1), and the backend's own lock keeps swap + generation atomic. Each browser tab
has its own `Session` in `gr.State`.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import re
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
import pandas as pd
import yaml

from engine.errors import ConfigError, MergescopeError
from engine.store import ResultStore, atomic_write_text, stable_hash
from ui import figures
from ui.state import MAX_CHAT_VARIANTS, PathPolicy, Session, display_path, parse_named_lines, row_from_result

if TYPE_CHECKING:
    from engine.backends.base import Backend

log = logging.getLogger(__name__)

ENGINE_QUEUE = "engine"
DEFAULT_WEIGHTS = "0:1:0.1"
PROBES_PER_KIND = 4
EXPORT_PREFIX = "mergescope-"
CSS = """
.ms-badge-refuse { color: #b00020; font-weight: 600; }
.ms-badge-comply { color: #1b7f3b; font-weight: 600; }
"""


# --- error handling ------------------------------------------------------------------------------------------------
def _readable(fn: Callable) -> Callable:
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


# --- the engine, shared by every session -----------------------------------------------------------------------
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


# --- defaults from the demo family -------------------------------------------------------------------------------
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


# --- pure helpers used by the events ---------------------------------------------------------------------------------
def _table(session: Session) -> pd.DataFrame:
    header, body = figures.table_rows(session.rows)
    return pd.DataFrame(body, columns=header)


def _y_choices(session: Session, y_metric: str | None) -> dict[str, Any]:
    choices = figures.skill_metrics(session.rows)
    return gr.update(choices=[(figures.metric_title(c), c) for c in choices], value=y_metric)


def _figures(session: Session, y_metric: str | None) -> tuple[Any, Any, Any]:
    return (
        figures.tradeoff_figure(session.rows, y_metric),
        figures.safety_figure(session.rows),
        figures.grid_heatmaps(session.rows, session.skills if len(session.skills) == 2 else ("ω1", "ω2")),
    )


def _picked_note(selected: list[str] | None) -> str:
    """Feedback under the table: which points are in the chat (the picker itself sits in the Chat tab)."""
    if not selected:
        return ""
    names = ", ".join(f"`{label}`" for label in selected)
    return f"In the chat: {names} (open the **Chat** tab to talk to them side by side)."


def _kept_histories(session: Session, sweep_id: str) -> dict[str, list[dict[str, str]]]:
    # Chats survive re-running or reopening the same sweep; another sweep's "ω=0.5" is another model.
    return session.histories if session.sweep_id == sweep_id else {}


def _badge(reply: str) -> str:
    from evals import is_refusal

    # Words, not emoji: they read the same in every font (headless browsers often lack emoji fonts).
    if is_refusal(reply):
        return '<span class="ms-badge-refuse">[refusal]</span>'
    return '<span class="ms-badge-comply">[answered]</span>'


def _display(history: list[dict[str, str]], *, streaming: bool = False) -> list[dict[str, str]]:
    """Chat history for a pane: each finished assistant reply gets a refusal badge (not sent back to the model)."""
    out = []
    for i, message in enumerate(history):
        content = message["content"]
        last = i == len(history) - 1
        if message["role"] == "assistant" and not (streaming and last):
            content = f"{content}\n\n{_badge(message['content'])}"
        out.append({"role": message["role"], "content": content})
    return out


def _safe_name(label: str) -> str:
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


# --- the app -----------------------------------------------------------------------------------------------------
def build_app(
    *,
    store_path: str | Path,
    allowed_roots: list[str | Path],
    backend: Backend | None = None,
    backend_factory: Callable[[Path], Backend] | None = None,
    family: Any | None = None,
    default_weights: str = DEFAULT_WEIGHTS,
    warm_up: bool = False,
) -> gr.Blocks:
    """The dashboard. Pass a running `backend` (tests share one) or a `backend_factory(start_model)` (started on
    first use, or at once in the background with `warm_up`, on the family's general model). `family`: the demo
    family the page opens on (None: empty fields)."""

    policy = PathPolicy.from_dirs(list(allowed_roots))
    engine = EngineHolder(backend, backend_factory)
    ResultStore(store_path).close()  # fail at start, not at the first sweep, if the store cannot be opened

    def open_store() -> ResultStore:
        # One connection per event: sqlite3 connections must not be shared by concurrent threads.
        return ResultStore(store_path)

    defaults = Defaults(family)
    downloads = Path(tempfile.mkdtemp(prefix="mergescope-ui-"))
    probes = probe_prompts([p for _, p in defaults.suites])
    discovered = policy.discover()
    # Exports go below the working directory when it is an allowed root (never into the shipped assets).
    export_root = Path.cwd() if policy.allowed(Path.cwd()) else policy.roots[-1]
    if warm_up and backend is None and defaults.general:
        engine.warm_up(defaults.general)

    # --- event handlers -------------------------------------------------------------------------------------------
    def _spec(
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
    ):
        from engine.backends.base import GenerationSettings
        from engine.sweep import SweepSpec, parse_weights

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
        return SweepSpec(
            base=policy.checkpoint(base, field="base"),
            general=policy.checkpoint(general, field="general"),
            skills=skills,
            method=method or "task_arithmetic",
            method_params=params,
            weights=parse_weights(weights or default_weights),
            grid=bool(grid),
            suites=suite_paths,
            references=refs if use_refs else {},
            settings=GenerationSettings(),
            standard_references=bool(use_refs),
            dataset_sizes=defaults.dataset_sizes,
            heuristic_point=bool(heur),
        )

    @_readable
    def check_compat(base: str, general: str, skills_text: str, refs_text: str) -> str:
        from engine.checkpoint import open_checkpoint
        from engine.compat import compatibility_report

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

    @_readable
    def diagnostics(base: str, skills_text: str, progress=gr.Progress()):  # noqa: B008 - Gradio's injection idiom
        from engine.diagnostics import task_vector_diagnostics

        skills = {
            n: policy.checkpoint(p, field=f"skill {n}")
            for n, p in parse_named_lines(skills_text, field="skills").items()
        }
        diag = task_vector_diagnostics(
            policy.checkpoint(base, field="base"),
            skills,
            progress=lambda i, n: progress((i, n), desc="reading tensors"),
        )
        data = diag.to_dict()
        return figures.norms_figure(data), figures.interference_figure(data), f"```\n{diag.format()}\n```"

    @_readable
    def run_sweep_ui(session: Session, y_metric, *inputs, progress=gr.Progress()):  # noqa: B008
        from engine.sweep import prepare_sweep, run_sweep

        spec = _spec(*inputs)
        prepared = prepare_sweep(spec)
        sweep_id = stable_hash(prepared.store_spec())[:16]
        session = Session(
            skills=list(spec.skill_paths),
            histories=_kept_histories(session, sweep_id),
            sweep_id=sweep_id,
            general=spec.general,
        )
        session.configs = {p.label: p.config for p in prepared.points}
        total = len(prepared.points)
        progress((0, total), desc="starting the engine" if not engine.started else "sweeping")
        yield _sweep_outputs(session, y_metric, f"Sweeping {total} points…")
        backend = engine.get(spec.general)
        with open_store() as store:
            for i, result in enumerate(run_sweep(prepared, backend, store)):
                session.upsert(row_from_result(result))
                progress((i + 1, total), desc=f"{result.label}" + (" (stored)" if result.cached else ""))
                yield _sweep_outputs(session, y_metric, f"{i + 1}/{total} points done (last: {result.label})")
        cached = sum(1 for r in session.rows if r.get("cached"))
        yield _sweep_outputs(
            session, y_metric, f"Done: {total} points ({cached} from the store) — sweep {session.sweep_id}"
        )

    def _sweep_outputs(session: Session, y_metric: str | None, status: str) -> tuple:
        y_metric = figures.default_metric(session.rows, session.skills, y_metric)
        trade, safety, heat = _figures(session, y_metric)
        labels = session.labels()
        return (
            session,
            trade,
            safety,
            heat,
            _table(session),
            _y_choices(session, y_metric),
            gr.update(choices=labels, value=[]),
            gr.update(choices=labels, value=labels[0] if labels else None),
            status,
        )

    @_readable
    def reopen(session: Session, y_metric, *inputs):
        """Show a stored sweep with these inputs without recomputing anything."""
        from engine.sweep import prepare_sweep

        prepared = prepare_sweep(_spec(*inputs))
        sweep_id = stable_hash(prepared.store_spec())[:16]
        with open_store() as store:
            known = {s["id"] for s in store.sweeps()}
            points = store.sweep_points(sweep_id) if sweep_id in known else []
        if sweep_id not in known:
            return _sweep_outputs(
                session, y_metric, "No stored results for these settings yet: press Run sweep."
            )
        session = Session(
            skills=list(prepared.spec.skill_paths),
            histories=_kept_histories(session, sweep_id),
            sweep_id=sweep_id,
            general=prepared.spec.general,
        )
        session.configs = {p.label: p.config for p in prepared.points}
        for point in points:
            if point.get("scores") is not None:
                session.upsert({**point, "cached": True})
        return _sweep_outputs(
            session, y_metric, f"Loaded {len(session.rows)} stored points of sweep {sweep_id}"
        )

    def reopen_on_open(session: Session, y_metric, *inputs):
        # On page open a missing or incomplete set of fields is normal, not an error worth a pop-up.
        try:
            return reopen.__wrapped__(session, y_metric, *inputs)
        except MergescopeError as exc:
            return _sweep_outputs(session, y_metric, f"Fill in the checkpoints to start ({exc}).")

    def two_skills_for_grid(on: bool, skills_text: str):
        """Ticking the 2-D grid with fewer than two skills listed fills in the family's first two."""
        try:
            listed = parse_named_lines(skills_text, field="skills")
        except MergescopeError:
            return gr.update()
        family_skills = [line for line in defaults.other_skills.splitlines() if line.strip()]
        if not on or len(listed) >= 2 or len(family_skills) < 2:
            return gr.update()
        return "\n".join(family_skills[:2])

    def redraw(session: Session, y_metric: str | None):
        return figures.tradeoff_figure(session.rows, y_metric)

    def pick_from_table(session: Session, selected: list[str], evt: gr.SelectData):
        # The row's own label cell, not its index: the table can be sorted in the page.
        cells = evt.row_value or []
        label = str(cells[0]).removesuffix(" ★") if cells else ""
        if session.row(label) is None:
            return gr.update()
        selected = list(selected or [])
        if label not in selected:
            if len(selected) >= MAX_CHAT_VARIANTS:
                gr.Warning(f"At most {MAX_CHAT_VARIANTS} variants side by side; unselect one first.")
                return gr.update()
            selected.append(label)
        return gr.update(value=selected)

    def show_panes(session: Session, selected: list[str]):
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
                    gr.update(visible=True, label=label, value=_display(session.histories.get(label, [])))
                )
            else:
                updates.append(gr.update(visible=False, value=[]))
        return updates

    @_readable
    def chat(session: Session, selected: list[str], prompt: str, max_tokens, temperature, top_p, seed):
        from engine.backends.base import GenerationSettings

        shown = list(selected or [])[:MAX_CHAT_VARIANTS]
        if not shown:
            raise ConfigError("chat: select one to four variants (from the table or the picker) first")
        if not (prompt or "").strip():
            raise ConfigError("chat: the prompt is empty")
        missing = [label for label in shown if label not in session.configs]
        if missing:
            raise ConfigError(f"chat: unknown variant(s) {missing}; run or reopen a sweep first")
        settings = GenerationSettings(
            max_tokens=int(max_tokens), temperature=float(temperature), top_p=float(top_p), seed=int(seed)
        )
        backend = engine.get(session.general or defaults.general)
        panes = [_display(session.histories.get(label, [])) for label in shown]

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
                    panes[pane] = _display([*messages, {"role": "assistant", "content": reply}], streaming=True)
                    yield outputs()
            history[:] = [*messages, {"role": "assistant", "content": reply}]
            panes[pane] = _display(history)
            yield outputs()

    def clear_chat(session: Session):
        session.histories = {}
        return [session] + [[] for _ in range(MAX_CHAT_VARIANTS)]

    @_readable
    def export_yaml(session: Session, label: str) -> tuple[str, str]:
        """The variant's mergekit YAML: a file to download, and the same text shown in the page."""
        if not label or label not in session.configs:
            raise ConfigError("export: choose a variant of the current sweep first")
        text = session.configs[label].to_yaml()
        path = atomic_write_text(downloads / f"{_safe_name(label)}.yml", text)
        return str(path), text

    def suggest_out_dir(label: str | None, current: str) -> Any:
        # A fresh suggestion per variant, unless the user typed a folder of their own.
        if not label or (current and not Path(current).name.startswith(EXPORT_PREFIX)):
            return gr.update()
        return str(export_root / "out" / f"{EXPORT_PREFIX}{_safe_name(label)}")

    @_readable
    def export_checkpoint(
        session: Session,
        label: str,
        out_dir: str,
        overwrite: bool,
        progress=gr.Progress(),  # noqa: B008 - Gradio's injection idiom
    ):
        from engine.export import export_merge

        if not label or label not in session.configs:
            raise ConfigError("export: choose a variant of the current sweep first")
        target = policy.output_dir(out_dir, field="output folder")
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

    @_readable
    def export_results(session: Session, y_metric: str | None):
        from engine.store import points_to_csv

        if not session.rows:
            raise ConfigError("export: no sweep results yet")
        stem = f"sweep-{session.sweep_id or 'results'}"
        csv_path = atomic_write_text(downloads / f"{stem}.csv", points_to_csv(session.rows))
        html_path = downloads / f"{stem}-plot.html"
        trade, safety, _ = _figures(session, y_metric)
        html = trade.to_html(include_plotlyjs=True, full_html=False)
        html += safety.to_html(include_plotlyjs=False, full_html=False)
        atomic_write_text(html_path, f"<html><head><meta charset='utf-8'></head><body>{html}</body></html>")
        return [str(csv_path), str(html_path)]

    # --- layout --------------------------------------------------------------------------------------------------
    with gr.Blocks(title="mergescope") as app:
        session_state = gr.State(Session())
        gr.Markdown(
            "# mergescope\nθ(ω) = θ_G + Σ ω_k (θ_Dk − θ_pre): sweep ω, see the tradeoff, chat with the variants, "
            f"export the one you pick. Paths are limited to: `{policy.describe()}`."
        )
        with gr.Tab("Checkpoints"):
            with gr.Row():
                base = gr.Dropdown(
                    discovered, value=defaults.base, label="base θ_pre", allow_custom_value=True
                )
                general = gr.Dropdown(
                    discovered,
                    value=defaults.general,
                    label="general θ_G (engine starts on it)",
                    allow_custom_value=True,
                )
            with gr.Row():
                skills = gr.Textbox(
                    defaults.skills,
                    lines=2,
                    label="skill checkpoints θ_D (NAME=PATH per line)",
                    info=("available: " + defaults.other_skills.replace("\n", "; ")) if family else None,
                )
                references = gr.Textbox(
                    defaults.references, lines=2, label="extra reference checkpoints (NAME=PATH per line)"
                )
            with gr.Row():
                check_btn = gr.Button("Check compatibility")
                diag_btn = gr.Button("Task-vector diagnostics")
            compat_md = gr.Markdown(elem_id="compat-report")
            with gr.Row():
                norms_plot = gr.Plot(label="per-layer norms")
                interference_plot = gr.Plot(label="interference")
            diag_md = gr.Markdown()

        with gr.Tab("Sweep"):
            with gr.Row():
                method = gr.Dropdown(_method_names(), value="task_arithmetic", label="merge method")
                method_params = gr.Textbox(
                    "{}", label="method parameters (YAML mapping)", placeholder="{density: 0.5}"
                )
                weights = gr.Textbox(
                    default_weights, label="ω values (START:STOP:STEP or a,b,c)", elem_id="weights"
                )
                grid = gr.Checkbox(False, label="2-D grid (two skills)")
            with gr.Row():
                suites = gr.CheckboxGroup(
                    defaults.suites,
                    value=[p for _, p in defaults.suites],
                    label="eval suites",
                    elem_id="suites",
                    scale=2,
                )
                extra_suites = gr.Textbox(
                    lines=1,
                    label="more eval suites (a suite folder, or a folder of suites, per line)",
                    elem_id="extra-suites",
                    scale=1,
                )
            with gr.Row():
                use_refs = gr.Checkbox(True, label="evaluate reference models", elem_id="use-refs")
                heuristic = gr.Checkbox(True, label="add the |D|/|G| point", elem_id="heuristic")
                run_btn = gr.Button("Run sweep", variant="primary", elem_id="run-sweep")
                reopen_btn = gr.Button("Show stored results", elem_id="reopen")
            with gr.Row(equal_height=True):
                status = gr.Markdown(elem_id="sweep-status")
                y_metric = gr.Dropdown(
                    [], label="tradeoff y axis", elem_id="y-metric", scale=0, min_width=240
                )
            with gr.Row():
                trade_plot = gr.Plot(figures.tradeoff_figure([]), label="tradeoff", elem_id="tradeoff-plot")
                safety_plot = gr.Plot(figures.safety_figure([]), label="over-refusal", elem_id="safety-plot")
            with gr.Accordion("2-D grid heatmaps", open=False) as heat_box:
                heat_plot = gr.Plot(figures.grid_heatmaps([]), label="grid", elem_id="grid-plot")
            table = gr.Dataframe(
                label="every point (click a row to add it to the chat)",
                interactive=False,
                elem_id="results-table",
            )
            picked_note = gr.Markdown(elem_id="picked-note")

        with gr.Tab("Chat"):
            picked = gr.CheckboxGroup(
                [],
                label=f"variants side by side (1–{MAX_CHAT_VARIANTS})",
                info="Tick points of the current sweep here, or click their rows in the Sweep tab's table. "
                "Run or reopen a sweep first.",
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

        with gr.Tab("Export"):
            export_label = gr.Dropdown([], label="variant", elem_id="export-variant", allow_custom_value=True)
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

        # --- wiring ----------------------------------------------------------------------------------------------
        spec_inputs = [
            base,
            general,
            skills,
            references,
            method,
            method_params,
            weights,
            grid,
            suites,
            extra_suites,
            use_refs,
            heuristic,
        ]
        sweep_outputs = [
            session_state,
            trade_plot,
            safety_plot,
            heat_plot,
            table,
            y_metric,
            picked,
            export_label,
            status,
        ]
        engine_queue = dict(concurrency_limit=1, concurrency_id=ENGINE_QUEUE)

        check_btn.click(check_compat, [base, general, skills, references], compat_md, api_name="check")
        diag_btn.click(
            diagnostics, [base, skills], [norms_plot, interference_plot, diag_md], api_name="diagnostics"
        )
        run_btn.click(
            run_sweep_ui,
            [session_state, y_metric, *spec_inputs],
            sweep_outputs,
            api_name="sweep",
            **engine_queue,
        )
        reopen_btn.click(reopen, [session_state, y_metric, *spec_inputs], sweep_outputs, api_name="reopen")
        grid.change(lambda on: gr.update(open=bool(on)), grid, heat_box, api_name=False)
        grid.change(two_skills_for_grid, [grid, skills], skills, api_name=False)
        # `.input`, not `.change`: a sweep's own yields also set this dropdown, and a redraw fired by them could land
        # after the sweep's last plot and put an older set of points back on screen.
        y_metric.input(redraw, [session_state, y_metric], trade_plot, api_name=False)
        table.select(pick_from_table, [session_state, picked], picked, api_name=False)
        picked.change(show_panes, [session_state, picked], panes, api_name=False)
        picked.change(_picked_note, picked, picked_note, api_name=False)
        # The variant last added to the chat is the one the Export tab offers first.
        picked.change(
            lambda sel: gr.update(value=sel[-1]) if sel else gr.update(), picked, export_label, api_name=False
        )
        chat_inputs = [session_state, picked, prompt, max_tokens, temperature, top_p, seed]
        chat_outputs = [session_state, prompt, *panes]
        send_evt = send_btn.click(chat, chat_inputs, chat_outputs, api_name="chat", **engine_queue)
        submit_evt = prompt.submit(chat, chat_inputs, chat_outputs, api_name=False, **engine_queue)
        stop_btn.click(None, cancels=[send_evt, submit_evt])
        clear_btn.click(clear_chat, session_state, [session_state, *panes], api_name=False)
        yaml_btn.click(
            export_yaml, [session_state, export_label], [yaml_file, yaml_text], api_name="export_yaml"
        )
        export_label.change(suggest_out_dir, [export_label, out_dir], out_dir, api_name=False)
        ckpt_btn.click(
            export_checkpoint,
            [session_state, export_label, out_dir, overwrite],
            ckpt_md,
            api_name="export_checkpoint",
            **engine_queue,
        )
        results_btn.click(export_results, [session_state, y_metric], results_files, api_name="export_results")
        # Stored results for the default settings appear on open, without recomputation.
        app.load(reopen_on_open, [session_state, y_metric, *spec_inputs], sweep_outputs, api_name=False)
        if family is not None:
            app.load(check_compat, [base, general, skills, references], compat_md, api_name=False)

    app.mergescope_downloads = downloads  # type: ignore[attr-defined]
    app.mergescope_engine = engine  # type: ignore[attr-defined]
    app.mergescope_roots = policy.roots  # type: ignore[attr-defined]
    return app


def _method_names() -> list[str]:
    try:
        from engine.methods import METHODS
    except ImportError:  # the methods package is not in this checkout yet
        return ["task_arithmetic"]
    return sorted(METHODS)


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
        quiet=True,
        show_error=True,
    )
