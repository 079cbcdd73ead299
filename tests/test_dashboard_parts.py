"""Fast checks of the dashboard's new pieces without an engine: Bradley–Terry strengths, the votes table,
imported reference CSVs, fitted axes and label placement, clickable point labels, the server address."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.errors import ConfigError, StoreError


def test_bradley_terry_orders_variants_by_wins_with_intervals():
    from engine.bradley_terry import fit, strengths

    votes = [("a", "b", "A")] * 8 + [("a", "b", "B")] * 2 + [("b", "c", "A")] * 6 + [("b", "c", "tie")] * 2
    s = {x.name: x for x in strengths(votes, ["a", "b", "c", "d"], resamples=100)}
    assert s["a"].value > s["b"].value > s["c"].value
    assert all(x.lo <= x.value <= x.hi for x in s.values())
    assert s["a"].lo < s["a"].hi and s["a"].votes == 10 and s["d"].votes == 0
    assert abs(sum(fit(votes, ["a", "b", "c"]))) < 1e-9  # centred log strengths
    # Equal records: equal strengths; all wins stays finite (the virtual tie).
    even = fit([("x", "y", "A"), ("x", "y", "B")], ["x", "y"])
    assert even[0] == pytest.approx(even[1])
    assert all(abs(v) < 10 for v in fit([("x", "y", "A")] * 20, ["x", "y"]))
    with pytest.raises(ValueError, match="unknown verdict 'maybe'"):
        strengths([("x", "y", "maybe")])


def test_votes_live_in_the_store_file_and_export_as_jsonl(tmp_path):
    from engine.store import ResultStore
    from engine.votes import VoteStore

    db = tmp_path / "r.db"
    ResultStore(db).close()
    with VoteStore(db) as votes:
        votes.add("s1", "how do I kill a process?", "ω=0", "ω=1", "use kill", "sorry", "A")
        votes.add("s2", "p", "ω=0", "ω=1", "x", "y", "tie")
        with pytest.raises(StoreError, match="unknown verdict"):
            votes.add("s1", "p", "ω=0", "ω=1", "x", "y", "C")
        with pytest.raises(StoreError, match="two different variants"):
            votes.add("s1", "p", "ω=0", "ω=0", "x", "y", "A")
        path = votes.export_jsonl("s1", tmp_path / "v.jsonl")
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert (
        len(lines) == 1
        and lines[0]["prompt"] == "how do I kill a process?"
        and lines[0]["reply_b"] == "sorry"
    )
    with ResultStore(db) as store:  # the results store still opens the file with the votes table in it
        assert store.count_results() == 0


def test_reference_csv_reads_papers_and_our_own_export():
    from engine.imported import read_reference_csv

    rows = read_reference_csv(
        "variant,omega,general,safety,harmful_refusal_lo\nPaper PTM,0.22,61.5,80,\nPaper CFT,,55,95.5,\n",
        source="paper.csv",
    )
    assert [r["label"] for r in rows] == ["Paper PTM", "Paper CFT"]
    assert rows[0]["weights"] == [0.22] and rows[1]["weights"] == []
    agg = rows[0]["scores"]["aggregates"]
    assert agg["general"]["value"] == pytest.approx(0.615)  # percentages become rates
    assert agg["skill:safety"]["value"] == pytest.approx(0.80)
    ours = read_reference_csv(
        "label,kind,w1,general,general_lo,general_hi,general_n,heuristic\nω=0,variant,0,0.9,0.8,0.95,40,\n",
        source="sweep.csv",
    )
    assert ours[0]["scores"]["aggregates"]["general"] == {"value": 0.9, "lo": 0.8, "hi": 0.95, "n": 40}
    with pytest.raises(ConfigError, match="paper.csv, line 3, column 'general': 'n/a' is not a number"):
        read_reference_csv("variant,general\na,0.5\nb,n/a\n", source="paper.csv")
    with pytest.raises(ConfigError, match="x.csv: no variant column"):
        read_reference_csv("foo,general\na,1\n", source="x.csv")


def test_axes_fit_the_data_and_labels_do_not_overlap():
    from ui import figures

    assert figures.fitted_range([0.8, 0.9]) == pytest.approx([0.792, 0.908])
    lo, hi = figures.fitted_range([0.5])
    assert hi - lo >= 0.1 and lo < 0.5 < hi
    assert figures.fitted_range([0.0, 1.0])[0] >= -0.03
    # Three labelled points almost on top of each other get three different, non-overlapping positions.
    pts = [(0.5, 0.5), (0.505, 0.5), (0.5, 0.505)]
    pos = figures.label_positions(pts, [7, 7, 7])
    assert len(set(pos)) == 3


def test_every_plotted_point_carries_its_label_for_click_to_chat():
    from test_figures import _result

    from ui import figures

    rows = [
        _result("general", "reference", (), 36, 2, 10),
        _result("ω=0", "variant", (0.0,), 36, 2, 10),
        _result("ω=0.22", "variant", (0.22,), 35, 12, 9, heuristic=True),
        _result("ω=1", "variant", (1.0,), 18, 20, 4),
    ]
    imported = [
        {
            "label": "paper",
            "kind": "imported",
            "weights": [],
            "scores": {
                "aggregates": {
                    "general": {"value": 0.1, "lo": 0.1, "hi": 0.1, "n": 0},
                    "harmful_refusal": {"value": 0.2, "lo": 0.2, "hi": 0.2, "n": 0},
                }
            },
        }
    ]
    fig = figures.tradeoff_figure(rows, "harmful_refusal", imported=imported)
    clickable = {c for t in fig.data if t.customdata is not None for c in t.customdata}
    assert clickable == {"general", "ω=0", "ω=0.22", "ω=1"}
    marked = next(t for t in fig.data if t.name == "imported (CSV)")
    assert list(marked.text) == ["paper (imported)"] and marked.customdata is None  # not a chat variant
    assert fig.layout.xaxis.range[0] < 0.1  # the axis reaches the imported point
    grid = [
        _result(f"ω=({a},{b})", "variant", (a, b), 30, 5, 9, math=4) for a in (0.0, 1.0) for b in (0.0, 1.0)
    ]
    heat = next(t for t in figures.grid_heatmaps(grid).data if t.type == "heatmap")
    assert heat.customdata[1][0] == "ω=(0.0,1.0)"  # row ω2=1, column ω1=0


def test_gradio_server_variables_apply_when_flags_are_absent():
    from ui.cli import server_address

    assert server_address(None, None, env={}) == ("127.0.0.1", 7860)
    env = {"GRADIO_SERVER_PORT": "7999", "GRADIO_SERVER_NAME": "0.0.0.0"}
    assert server_address(None, None, env=env) == ("0.0.0.0", 7999)
    assert server_address("127.0.0.1", 8000, env=env) == ("127.0.0.1", 8000)
    with pytest.raises(ConfigError, match="GRADIO_SERVER_PORT='eighty'"):
        server_address(None, None, env={"GRADIO_SERVER_PORT": "eighty"})


# --- the sweep tab's lm-eval tasks and composite axes ----------------------------------------------------------------
def _sweep_ctx(tmp_path, demo_family):
    from ui.context import AppContext, Defaults
    from ui.engine_holder import EngineHolder
    from ui.paths import PathPolicy

    assets = Path(__file__).resolve().parent.parent / "assets"
    policy = PathPolicy.from_dirs([assets, tmp_path])
    return AppContext(tmp_path / "store.db", policy, EngineHolder(None, None), Defaults(demo_family))


def _fields(demo_family, lm_eval: str, composites: str) -> list:
    skill, path = next(iter(demo_family.skills.items()))
    general = str((demo_family.root / "evals" / "demo-general").resolve())
    return [str(demo_family.base), str(demo_family.general), f"{skill}={path}", "", "task_arithmetic", "{}",
            "0,1", False, [general], "", False, True, lm_eval, composites]  # fmt: skip


def test_sweep_tab_builds_lm_eval_tasks_and_composites_into_the_spec(tmp_path, demo_family):
    """The tab's lm-eval field (with options, `lm-eval:` optional, task files only inside the roots) and its
    composite lines become the SweepSpec's suites and composites; a shared link rebuilds the same fields."""
    import shutil

    from engine.errors import MergescopeError
    from engine.sweep import prepare_sweep
    from ui.share import fields_from_spec
    from ui.tabs.sweep import sweep_spec

    data = Path(__file__).parent / "data" / "lm_eval"
    for name in ("demo_pick.yaml", "demo_pick.jsonl"):
        shutil.copy(data / name, tmp_path / name)
    ctx = _sweep_ctx(tmp_path, demo_family)
    task = tmp_path / "demo_pick.yaml"
    fields = _fields(
        demo_family,
        f"{task}@fewshot=1,limit=6",
        "avg=demo-general,lm-eval:mergescope_demo_pick@fewshot=1,limit=6",
    )
    spec = sweep_spec(ctx, *fields)
    assert spec.suites[-1] == f"lm-eval:{task.resolve()}@fewshot=1,limit=6"
    assert spec.composites == {"avg": ["demo-general", "lm-eval:mergescope_demo_pick@fewshot=1,limit=6"]}
    prepared = prepare_sweep(spec)
    assert [s.name for s in prepared.suites][-1] == "lm-eval:mergescope_demo_pick@fewshot=1,limit=6"
    rebuilt = fields_from_spec(ctx, spec.to_dict(), [])
    assert rebuilt[-2:] == [
        spec.suites[-1],
        "avg=demo-general,lm-eval:mergescope_demo_pick@fewshot=1,limit=6",
    ]
    assert sweep_spec(ctx, *rebuilt).to_dict() == spec.to_dict()
    outside = Path(__file__).parent / "data" / "lm_eval" / "demo_pick.yaml"
    for lm_eval, composites, needle in (
        (str(outside), "", "lm-eval task file: .* outside the allowed roots"),
        (f"{task}@shots=2", "", "unknown task option 'shots'"),
        ("", "avg=demo-general\navg=demo-general", "defined twice"),
        ("", "avg", "expected NAME=SUITE"),
    ):
        with pytest.raises(MergescopeError, match=needle):
            sweep_spec(ctx, *_fields(demo_family, lm_eval, composites))
    with pytest.raises(MergescopeError, match="unknown suite.*nosuch"):
        prepare_sweep(sweep_spec(ctx, *_fields(demo_family, "", "avg=demo-general,nosuch")))


def test_tradeoff_x_axis_offers_composites_and_suites_and_follows_the_session():
    from ui.state import Session
    from ui.tabs.sweep import trade_figure, x_choices, x_metric

    def row(label, w, general, avg, suite):
        agg = {"general": {"value": general, "lo": 0, "hi": 1, "n": 9}, "harmful_refusal": {"value": w, "lo": 0, "hi": 1, "n": 9},
               "composite:avg": {"value": avg, "lo": 0, "hi": 1, "n": 9}}  # fmt: skip
        scores = {
            "aggregates": agg,
            "scores": {"suites": {"demo-math": {"value": suite, "lo": 0, "hi": 1, "n": 9}}},
        }
        return {"label": label, "kind": "variant", "weights": [w], "scores": scores}

    session = Session(
        rows=[row("ω=0", 0.0, 0.5, 0.3, 0.1), row("ω=1", 1.0, 0.4, 0.6, 0.2)], skills=["safety"]
    )
    values = [v for _, v in x_choices(session)]
    assert values[:2] == ["composite:avg", "general"] and "suite:demo-math" in values
    session.x_metric = "composite:avg"
    fig = trade_figure(session, "harmful_refusal")
    curve = next(t for t in fig.data if t.name == "merge ω")
    assert list(curve.x) == [0.3, 0.6] and fig.layout.xaxis.title.text == "avg (composite)"
    session.x_metric = "suite:demo-math"
    assert list(next(t for t in trade_figure(session, None).data if t.name == "merge ω").x) == [0.1, 0.2]
    session.x_metric = "composite:gone"  # a sweep without it: back to the general score
    assert x_metric(session) == "general"
