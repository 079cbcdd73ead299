"""The dashboard through its HTTP API (`gradio_client`), against a really launched app serving the session's shared
vLLM backend on the demo family: compatibility, a small sweep, reopen from the store without recomputation, chat,
exports, readable errors, and two independent browser sessions."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import yaml
from ui_probe import telling_prompt

gradio_client = pytest.importorskip("gradio_client")

WEIGHTS = "0,1"


@pytest.fixture(scope="module")
def ui(vllm_backend, demo_family, tmp_path_factory):
    """A launched dashboard (in-process, free localhost port) plus the inputs of a small sweep."""
    from ui.app import build_app, launch

    work = tmp_path_factory.mktemp("ui")
    repo_assets = Path(__file__).resolve().parent.parent / "assets"
    app = build_app(
        store_path=work / "results.db",
        allowed_roots=[repo_assets, work],
        backend=vllm_backend,
        family=demo_family,
        default_weights=WEIGHTS,
    )
    launch(app, port=None, block=False)
    try:
        yield {"url": app.local_url, "work": work, "family": demo_family, "app": app}
    finally:
        app.close()


def small_spec(family, *, skills: str | None = None, weights: str = WEIGHTS) -> list:
    """Inputs of the sweep events, in the page's order: one skill, two ω, the heuristic point, no references, a
    general suite and the two safety suites (so every plot has data and the sweep stays quick)."""
    suites = [str(Path(p).resolve()) for p in family.suites]
    wanted = [p for p in suites if any(k in Path(p).name for k in ("general", "harmful", "benign"))][
        :3
    ] or suites
    skill_name, skill_path = next(iter(family.skills.items()))
    return [
        str(family.base),
        str(family.general),
        skills if skills is not None else f"{skill_name}={skill_path}",
        "",
        "task_arithmetic",
        "{}",
        weights,
        False,
        wanted,
        "",
        False,
        True,
    ]


def client(ui) -> gradio_client.Client:
    return gradio_client.Client(ui["url"], verbose=False)


def plot_traces(plot_output: dict) -> list[dict]:
    return json.loads(plot_output["plot"])["data"]


@pytest.fixture(scope="module")
def swept(ui):
    """One client session that has run the small sweep."""
    c = client(ui)
    out = c.predict(None, *small_spec(ui["family"]), api_name="/sweep")
    return c, out


@pytest.mark.vllm
def test_compatibility_report_and_path_policy(ui):
    c = client(ui)
    family = ui["family"]
    skills = "\n".join(f"{n}={p}" for n, p in family.skills.items())
    report = c.predict(str(family.base), str(family.general), skills, "", api_name="/check")
    assert "### Compatible" in report
    with pytest.raises(gradio_client.exceptions.AppError, match="outside the allowed roots"):
        c.predict("/etc", str(family.general), skills, "", api_name="/check")
    with pytest.raises(gradio_client.exceptions.AppError, match="does not exist"):
        c.predict(str(family.base), str(family.general), "s=/nonexistent/ckpt", "", api_name="/check")


@pytest.mark.vllm
def test_sweep_fills_plot_table_and_picker(swept, ui):
    _, (trade, safety, _grid, table, y_axis, x_axis, picked, export_variant, status) = swept
    assert status.startswith("Done")
    curve = next(t for t in plot_traces(trade) if t["name"] == "merge ω")
    # ω = 0, the |D|/|G| heuristic, 1: one marker each
    assert len(curve["x"]) == 3
    assert any(t["name"].startswith("|D|/|G|") for t in plot_traces(trade))
    assert any(t["name"] == "merge ω" for t in plot_traces(safety))
    labels = [row[0].rstrip(" ★") for row in table["data"]]
    assert labels[0] == "ω=0" and labels[-1] == "ω=1" and len(labels) == 3
    assert any(h.startswith("suite ") for h in table["headers"])
    # The swept skill's score is the default y axis (safety's score is the harmful-refusal rate); a new sweep
    # clears the chat picker and offers its first point for export.
    skill = next(iter(ui["family"].skills))
    assert y_axis["value"] == ("harmful_refusal" if skill == "safety" else f"skill:{skill}")
    assert picked["value"] == [] and [c[1] for c in picked["choices"]] == labels
    assert export_variant["value"] == labels[0]
    assert x_axis["value"] == "general" and "suite:demo-general" in [c[1] for c in x_axis["choices"]]


@pytest.mark.vllm
def test_sweep_with_an_lm_eval_task_and_a_composite_axis(ui):
    """The tab's lm-eval field (a task file with options) and a composite line: every point gets the task's score
    and the composite; the x axis offers the composite and, picked, plots it."""
    import shutil

    data = Path(__file__).parent / "data" / "lm_eval"
    for name in ("demo_pick.yaml", "demo_pick.jsonl"):
        shutil.copy(data / name, ui["work"] / name)
    task = "lm-eval:mergescope_demo_pick@limit=6"
    fields = [
        *small_spec(ui["family"]),
        f"{ui['work'] / 'demo_pick.yaml'}@limit=6",
        f"avg=demo-general,{task}",
    ]
    c = client(ui)
    out = c.predict(None, *fields, api_name="/sweep")
    _trade, _safety, _grid, table, y_axis, x_axis, _picked, _export, status = out
    assert status.startswith("Done: 3 points"), status
    assert {"composite:avg", task, "suite:demo-general"} <= {v for _, v in x_axis["choices"]}
    header = table["headers"]
    rows = {r[0].rstrip(" ★"): dict(zip(header, r, strict=True)) for r in table["data"]}
    for row in rows.values():  # the composite is the mean of its two parts, at every point
        assert row["composite:avg"] == pytest.approx((row[task] + row["suite demo-general"]) / 2, abs=2e-3)
    plot = c.predict("composite:avg", y_axis["value"], api_name="/x_axis")
    curve = next(t for t in plot_traces(plot) if t["name"] == "merge ω")
    assert json.loads(plot["plot"])["layout"]["xaxis"]["title"]["text"] == "avg (composite)"
    want = sorted(rows[label]["composite:avg"] for label in curve["text"])
    assert sorted(curve["x"]) == pytest.approx(want, abs=2e-3)


@pytest.mark.vllm
def test_reopen_shows_stored_results_without_recomputation(swept, ui, vllm_backend):
    _, first = swept
    swaps = vllm_backend.swaps
    other = client(ui)  # a new browser session
    out = other.predict(None, *small_spec(ui["family"]), api_name="/reopen")
    assert out[-1].startswith("Loaded 3 stored points")
    assert out[3]["data"] == first[3]["data"]  # same table, cell for cell
    assert vllm_backend.swaps == swaps  # nothing was recomputed


@pytest.mark.vllm
def test_chat_sends_one_prompt_to_two_variants(swept, ui):
    c, _ = swept
    # A safety probe on which the sweep stored different greedy replies for ω=0 and ω=1.
    prompt = telling_prompt(ui["work"] / "results.db", ui["family"], "ω=0", "ω=1")
    out = c.predict(["ω=0", "ω=1"], prompt, 32, 0.0, 1.0, 0, api_name="/chat")
    prompt_box, pane0, pane1, pane2, pane3 = out
    assert prompt_box == ""
    replies = [pane[-1]["content"][0]["text"] for pane in (pane0, pane1)]
    assert all(pane[0]["content"][0]["text"] == prompt for pane in (pane0, pane1))
    assert all("refusal" in r or "answered" in r for r in replies)  # the badge
    assert replies[0] != replies[1]
    assert not (isinstance(pane2, list) and pane2)  # the third pane is untouched


@pytest.mark.vllm
def test_chat_without_a_sweep_is_a_readable_error(ui):
    c = client(ui)  # fresh session: its own state, no variants
    # Gradio itself refuses a label this session's picker does not offer; either way no other session's
    # variants are reachable.
    with pytest.raises(gradio_client.exceptions.AppError, match="unknown variant|not in the list of choices"):
        c.predict(["ω=0"], "hello", 8, 0.0, 1.0, 0, api_name="/chat")


@pytest.mark.vllm
def test_export_yaml_describes_the_variant(swept, ui):
    c, _ = swept
    path, text = c.predict("ω=1", api_name="/export_yaml")
    assert Path(path).name == "omega_1.yml"
    assert Path(path).read_text().strip() == text.strip()  # the file and the page show the same YAML
    data = yaml.safe_load(text)
    assert data["merge_method"] == "task_arithmetic"
    weights = {Path(m["model"]).name: m["parameters"]["weight"] for m in data["models"]}
    skill_dir = Path(next(iter(ui["family"].skills.values()))).name
    assert weights[skill_dir] == pytest.approx(1.0)
    assert weights[Path(ui["family"].general).name] == pytest.approx(1.0)


@pytest.mark.vllm
def test_export_results_csv_and_html(swept):
    c, _ = swept
    csv_path, html_path = c.predict(None, api_name="/export_results")
    rows = list(csv.DictReader(io.StringIO(Path(csv_path).read_text())))
    assert [r["label"] for r in rows] == ["ω=0", rows[1]["label"], "ω=1"]
    assert rows[1]["heuristic"] == "yes"
    html = Path(html_path).read_text()
    assert "plotly" in html.lower() and "Tradeoff" in html


@pytest.mark.vllm
def test_export_checkpoint_writes_a_card_with_results(swept, ui):
    c, _ = swept
    out_dir = ui["work"] / "export-omega1"
    message = c.predict("ω=1", str(out_dir), False, api_name="/export_checkpoint")
    assert "Wrote" in message
    card = (out_dir / "README.md").read_text()
    assert "Evaluation (mergescope sweep)" in card and "general" in card
    assert (out_dir / "config.json").is_file()
    with pytest.raises(gradio_client.exceptions.AppError, match="already exists: tick 'overwrite'"):
        c.predict("ω=1", str(out_dir), False, api_name="/export_checkpoint")
    with pytest.raises(gradio_client.exceptions.AppError, match="outside the allowed roots"):
        c.predict("ω=1", "/tmp/../etc/mergescope-out", False, api_name="/export_checkpoint")


@pytest.mark.vllm
def test_bad_input_is_a_message_and_the_app_keeps_running(ui):
    c = client(ui)
    bad = small_spec(ui["family"], weights="1:0:0.1")
    with pytest.raises(gradio_client.exceptions.AppError, match="STOP must be >= START"):
        c.predict(None, *bad, api_name="/sweep")
    out = c.predict(None, *small_spec(ui["family"]), api_name="/reopen")
    assert out[-1].startswith("Loaded")


# --- click-to-chat, behaviour browser, blind votes, CSV import (issue 13) ----------------------------------------
@pytest.mark.vllm
def test_clicked_plot_point_joins_the_chat_picker(swept):
    c, (trade, *_rest) = swept
    labels = [cd for t in plot_traces(trade) for cd in t.get("customdata") or []]
    assert "ω=1" in labels  # the label the page's click listener sends

    def click(picked: list[str], label: str) -> list[str] | None:
        out = c.predict(picked, json.dumps({"label": label, "nonce": len(picked)}), api_name="/plot_click")
        return out.get("value") if isinstance(out, dict) else out  # an update, or no change at all

    assert click([], "ω=1") == ["ω=1"]
    assert click(["ω=0"], "ω=1") == ["ω=0", "ω=1"]
    assert click(["ω=0"], "no-such-point") is None  # unknown labels change nothing


@pytest.mark.vllm
def test_behaviour_browser_and_the_browse_command_show_the_same_table(swept, ui, tmp_path, capsys):
    from engine.cli import main

    c, _ = swept
    harmful = next(Path(p).name for p in ui["family"].suites if "harmful" in Path(p).name)
    table, summary = c.predict(harmful, "flips", None, None, "", api_name="/browse")
    assert f"of `{harmful}`" in summary
    header = table["headers"]
    variants = [h for h in header if h.startswith("ω=")]
    first, last = header.index(variants[0]), header.index(variants[-1])
    # The sweep stored replies of the general model's tendency to comply at ω=0 and of the safety skill at ω=1.
    flips = [row for row in table["data"] if row[first] == "complied" and row[last] == "refused"]
    assert flips, "no harmful item flips from complied to refused as ω grows"
    item, prompt = flips[0][0], flips[0][3]
    chat_prompt, detail = c.predict(harmful, item, api_name="/browse_item")
    assert chat_prompt == prompt and item in detail and "refused" in detail
    out = tmp_path / "flips.csv"
    store = ui["work"] / "results.db"
    assert main(["browse", "--store", str(store), "--suite", harmful, "--filter", "flips", "--csv", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = list(csv.reader(io.StringIO(out.read_text())))
    assert rows[0][: len(header)] == header
    assert [r[: len(header)] for r in rows[1:]] == [[str(x) for x in r] for r in table["data"]]
    assert item in printed


@pytest.mark.vllm
def test_blind_votes_feed_the_strength_plot_and_export(swept, ui):
    c, _ = swept
    prompt = c.predict("", api_name="/ab_draw")
    assert prompt.strip()
    counts = []
    for verdict in ("A", "B", "A"):
        reply_a, reply_b, reveal = c.predict("ω=0", "ω=1", prompt, api_name="/ab_ask")
        assert reply_a.strip() and reply_b.strip() and reveal == ""
        revealed, plot, count = c.predict(None, api_name=f"/ab_vote_{verdict}")
        assert "A was" in revealed and {"ω=0", "ω=1"} == {
            x.split("</b>")[0] for x in revealed.split("<b>")[2:]
        }
        counts.append(count)
    assert counts[-1].startswith("3 votes")
    strength = next(t for t in plot_traces(plot) if t["name"].startswith("vote strength"))
    assert sorted(strength["customdata"]) == ["ω=0", "ω=1"]
    assert any(t["name"].endswith("(automatic)") for t in plot_traces(plot))
    with pytest.raises(gradio_client.exceptions.AppError, match="ask both variants first"):
        c.predict(None, api_name="/ab_vote_tie")  # one vote per answered pair
    lines = [json.loads(x) for x in Path(c.predict(api_name="/ab_export")).read_text().splitlines()]
    assert len(lines) == 3 and all(v["prompt"] == prompt and v["reply_a"] and v["reply_b"] for v in lines)


@pytest.mark.vllm
def test_imported_reference_csv_is_drawn_and_marked(swept, tmp_path):
    c, _ = swept
    path = tmp_path / "paper.csv"
    path.write_text("variant,omega,general,harmful_refusal,benign_compliance\nPaper PTM,0.2,41,88,70\n")
    trade, safety, note = c.predict(gradio_client.handle_file(str(path)), None, api_name="/import_csv")
    assert "Imported 1 reference points" in note
    for fig in (trade, safety):
        imported = next(t for t in plot_traces(fig) if t["name"] == "imported (CSV)")
        assert imported["text"] == ["Paper PTM (imported)"]
    assert next(t for t in plot_traces(trade) if t["name"] == "imported (CSV)")["x"] == [pytest.approx(0.41)]
    bad = tmp_path / "bad.csv"
    bad.write_text("variant,general\nx,lots\n")
    with pytest.raises(gradio_client.exceptions.AppError, match="bad.csv, line 2, column 'general'"):
        c.predict(gradio_client.handle_file(str(bad)), None, api_name="/import_csv")


# --- fast checks of the command and the path policy (no engine) -------------------------------------------------
def test_ui_command_defaults_are_safe():
    from engine.cli import build_parser

    args = build_parser(["ui"]).parse_args(["ui"])
    from ui.cli import server_address

    assert server_address(args.host, args.port, env={}) == ("127.0.0.1", 7860)
    assert args.share is False and args.auth is None
    args = build_parser(["ui"]).parse_args(
        ["ui", "--allowed-root", "/a", "--allowed-root", "/b", "--auth", "u:p"]
    )
    assert args.allowed_root == ["/a", "/b"]
    from ui.cli import parse_auth

    assert parse_auth("u:p:q") == ("u", "p:q")
    from engine.errors import ConfigError

    with pytest.raises(ConfigError, match="USER:PASS"):
        parse_auth("nopassword")


def test_path_policy_keeps_reads_and_writes_inside_the_roots(tmp_path):
    from engine.errors import ConfigError
    from ui.paths import PathPolicy, parse_named_lines

    root = tmp_path / "root"
    (root / "ckpt").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "escape").symlink_to(outside)
    policy = PathPolicy.from_dirs([root])
    assert policy.checkpoint(str(root / "ckpt"), field="base") == str((root / "ckpt").resolve())
    with pytest.raises(ConfigError, match="base: .* outside the allowed roots"):
        policy.checkpoint(str(outside), field="base")
    with pytest.raises(ConfigError, match="outside the allowed roots"):
        policy.checkpoint(str(root / "escape"), field="skill s")  # a symlink does not widen the roots
    assert policy.checkpoint("org/model-name", field="base") == "org/model-name"  # hub id passes through
    with pytest.raises(ConfigError, match="does not exist"):
        policy.checkpoint(str(root / "missing" / "x" / "y"), field="base")
    assert policy.output_dir(str(root / "new" / "out"), field="out") == (root / "new" / "out").resolve()
    with pytest.raises(ConfigError, match="outside"):
        policy.output_dir(str(root / ".." / "outside" / "out"), field="out")
    assert policy.existing(str(root / "ckpt"), field="eval suite") == (root / "ckpt").resolve()
    with pytest.raises(ConfigError, match="eval suite: .* does not exist"):
        policy.existing("org/not-a-local-folder", field="eval suite")  # suites are never hub ids
    with pytest.raises(ConfigError, match="eval suite: .* outside the allowed roots"):
        policy.existing(str(outside), field="eval suite")
    assert parse_named_lines("a=/x\n\n/y/b\n", field="skills") == {"a": "/x", "b": "/y/b"}
    with pytest.raises(ConfigError, match="appears twice"):
        parse_named_lines("a=/x\na=/y", field="skills")


def test_app_without_a_family_or_engine_starts_and_explains(tmp_path):
    """No demo family, no engine: the page still serves, and actions answer with readable messages."""
    from ui.app import build_app, launch

    app = build_app(store_path=tmp_path / "r.db", allowed_roots=[tmp_path])
    launch(app, port=None, block=False)
    try:
        c = gradio_client.Client(app.local_url, verbose=False)
        with pytest.raises(gradio_client.exceptions.AppError, match="base: no checkpoint given"):
            c.predict("", "", "", "", api_name="/check")
        with pytest.raises(gradio_client.exceptions.AppError, match="export: no sweep results yet"):
            c.predict(None, api_name="/export_results")
    finally:
        app.close()


def test_task_vector_diagnostics_through_the_api(demo_family, tmp_path):
    """Per-layer norms and the interference heatmap of the demo family's two skills (no engine needed)."""
    from ui.app import build_app, launch

    repo_assets = Path(__file__).resolve().parent.parent / "assets"
    app = build_app(store_path=tmp_path / "r.db", allowed_roots=[repo_assets], family=demo_family)
    launch(app, port=None, block=False)
    try:
        c = gradio_client.Client(app.local_url, verbose=False)
        skills = "\n".join(f"{n}={p}" for n, p in demo_family.skills.items())
        norms, interference, summary = c.predict(str(demo_family.base), skills, api_name="/diagnostics")
    finally:
        app.close()
    bars = plot_traces(norms)
    assert [t["name"] for t in bars] == [f"τ {n}" for n in demo_family.skills]
    assert all(v > 0 for t in bars for v in t["y"])
    heat = plot_traces(interference)[0]
    if len(demo_family.skills) >= 2:
        assert "cos" in heat["text"][0][1] and "sign conflict" in heat["text"][0][1]
    assert "task vectors over" in summary
