"""Fast checks of the dashboard's new pieces without an engine: Bradley–Terry strengths, the votes table,
imported reference CSVs, fitted axes and label placement, clickable point labels, the server address."""

from __future__ import annotations

import json

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
