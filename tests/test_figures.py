"""The dashboard's plotly figures and table, built from real engine result objects (PointResult + evals Scores)."""

from __future__ import annotations

import pytest

from engine.sweep import PointResult
from evals import Score, Scores
from ui import figures
from ui.state import Session, row_from_result


def _result(label, kind, weights, general, harmful, benign, *, heuristic=False, math=None) -> dict:
    skills = {"safety": Score.from_counts(harmful, 20)}
    if math is not None:
        skills["math"] = Score.from_counts(math, 20)
    scores = Scores(
        general=Score.from_counts(general, 40),
        skills=skills,
        harmful_refusal=Score.from_counts(harmful, 20),
        benign_compliance=Score.from_counts(benign, 10),
        suites={
            "demo-general": Score.from_counts(general, 40),
            "demo-harmful": Score.from_counts(harmful, 20),
        },
    )
    result = PointResult(
        label=label,
        kind=kind,
        weights=tuple(weights),
        scores=scores,
        suite_results=[],
        timings={"swap_s": 0.1, "generate_s": 0.2, "score_s": 0.0},
        key=label,
        cached=False,
        heuristic=heuristic,
    )
    return row_from_result(result)


@pytest.fixture
def rows() -> list[dict]:
    return [
        _result("general", "reference", (), 36, 2, 10),
        _result("cft", "reference", (), 16, 19, 3),
        _result("ω=0", "variant", (0.0,), 36, 2, 10),
        _result("ω=0.22", "variant", (0.22,), 35, 12, 9, heuristic=True),
        _result("ω=0.5", "variant", (0.5,), 30, 17, 8),
        _result("ω=1", "variant", (1.0,), 18, 20, 4),
    ]


def test_pareto_front_keeps_only_non_dominated_points_sorted_by_x():
    points = [(0.1, 0.9), (0.5, 0.5), (0.4, 0.4), (0.9, 0.1), (0.5, 0.5), (0.2, 0.2)]
    front = figures.pareto_front(points)
    assert [points[i] for i in front] == [(0.1, 0.9), (0.5, 0.5), (0.5, 0.5), (0.9, 0.1)]
    assert 2 not in front and 5 not in front


def test_tradeoff_figure_marks_variants_heuristic_references_and_front(rows):
    fig = figures.tradeoff_figure(rows, "harmful_refusal")
    by_name = {t.name: t for t in fig.data}
    curve = by_name["merge ω"]
    assert list(curve.text) == ["ω=0", "ω=0.22", "ω=0.5", "ω=1"]  # one marker per ω, in ω order
    assert list(curve.marker.color) == [0.0, 0.22, 0.5, 1.0]  # colour = ω
    assert curve.x[3] == pytest.approx(18 / 40) and curve.y[3] == pytest.approx(1.0)
    # error bars come from the Wilson interval of each score
    s = Score.from_counts(30, 40)
    assert curve.error_x.array[2] == pytest.approx(s.hi - s.value)
    assert curve.error_x.arrayminus[2] == pytest.approx(s.value - s.lo)
    star = next(t for t in fig.data if t.name.startswith("|D|/|G|"))
    assert star.marker.symbol == "star" and star.x[0] == pytest.approx(35 / 40)
    assert by_name["general"].marker.symbol != by_name["cft"].marker.symbol
    front = by_name["Pareto front"]
    assert (18 / 40, 1.0) in list(zip(front.x, front.y, strict=True))  # ω=1 maximises refusal
    assert (16 / 40, 19 / 20) not in list(zip(front.x, front.y, strict=True))  # CFT: dominated by ω=1
    assert len(front.x) == 5  # everything else trades one axis for the other
    assert fig.layout.xaxis.title.text == "general score"


def test_safety_view_plots_benign_compliance_against_harmful_refusal(rows):
    fig = figures.safety_figure(rows)
    curve = next(t for t in fig.data if t.name == "merge ω")
    assert list(curve.x) == pytest.approx([1.0, 0.9, 0.8, 0.4])
    assert list(curve.y) == pytest.approx([0.1, 0.6, 0.85, 1.0])
    cft = next(t for t in fig.data if t.name == "cft")
    assert cft.x[0] == pytest.approx(0.3) and cft.y[0] == pytest.approx(0.95)


def test_y_axis_choices_list_skills_before_safety_rates():
    rows = [_result("ω=(0,0)", "variant", (0.0, 0.0), 30, 5, 9, math=4)]
    assert figures.skill_metrics(rows) == ["skill:math", "harmful_refusal", "benign_compliance"]
    fig = figures.tradeoff_figure(rows)
    assert fig.layout.yaxis.title.text == "math skill score"


def test_grid_heatmaps_place_each_point_at_its_weights():
    rows = [
        _result(
            f"ω=({a},{b})", "variant", (a, b), int(40 - 20 * a - 10 * b), int(20 * a), 10, math=int(20 * b)
        )
        for a in (0.0, 0.5, 1.0)
        for b in (0.0, 1.0)
    ]
    fig = figures.grid_heatmaps(rows, ("safety", "math"))
    heat = [t for t in fig.data if t.type == "heatmap"]
    assert len(heat) == 4  # general, skill:math, harmful_refusal, benign_compliance
    general = heat[0]
    assert list(general.x) == ["0", "0.5", "1"] and list(general.y) == ["0", "1"]
    assert general.z[1][2] == pytest.approx((40 - 20 - 10) / 40)  # ω_safety=1 (column), ω_math=1 (row)
    assert fig.layout.xaxis.title.text == "ω safety"


def test_grid_and_scatter_show_placeholders_without_points():
    assert figures.grid_heatmaps([]).layout.annotations[0].text.startswith("Heatmaps appear")
    assert "No points yet" in figures.tradeoff_figure([]).layout.annotations[0].text


def test_table_has_every_aggregate_and_every_suite(rows):
    header, body = figures.table_rows(rows)
    assert header[:3] == ["label", "kind", "ω"]
    assert "general" in header and "harmful_refusal" in header and "benign_compliance" in header
    assert "suite demo-general" in header and "suite demo-harmful" in header
    assert len(body) == len(rows)
    star_row = body[3]
    assert star_row[0] == "ω=0.22 ★" and star_row[2] == "0.22"
    assert star_row[header.index("suite demo-harmful")] == pytest.approx(0.6)


def test_session_upsert_replaces_a_rerun_point(rows):
    session = Session()
    for row in rows:
        session.upsert(row)
    session.upsert(_result("ω=1", "variant", (1.0,), 10, 20, 0))
    assert session.labels() == [r["label"] for r in rows]
    assert session.row("ω=1")["scores"]["aggregates"]["general"]["value"] == pytest.approx(0.25)


def test_diagnostics_figures_show_each_skill_and_pair():
    diag = {
        "skills": ["safety", "math"],
        "groups": ["embed", "layer 0", "head/norm"],
        "layer_norms": {"safety": [1.0, 2.0, 0.5], "math": [0.5, 1.0, 0.1]},
        "total_norms": {"safety": 2.3, "math": 1.1},
        "pairs": [{"a": "safety", "b": "math", "cosine": -0.25, "sign_conflict": 0.6}],
    }
    norms = figures.norms_figure(diag)
    assert [t.name for t in norms.data] == ["τ safety", "τ math"]
    heat = figures.interference_figure(diag).data[0]
    assert heat.z[0][1] == heat.z[1][0] == -0.25
    assert "60.0%" in heat.text[0][1]


def test_default_y_axis_is_the_swept_skill(rows):
    # A safety skill's score is the harmful-refusal rate; a skill with its own suites has skill:<name>.
    assert figures.default_metric(rows, ["safety"]) == "harmful_refusal"
    with_math = [*rows, _result("ω=0.3", "variant", (0.3,), 30, 5, 9, math=4)]
    assert figures.default_metric(with_math, ["math"]) == "skill:math"
    assert figures.default_metric(with_math, ["math"], "benign_compliance") == "benign_compliance"
    assert figures.default_metric(with_math, ["math"], "skill:gone") == "skill:math"
    assert figures.default_metric([], ["math"]) is None


def test_table_order_is_the_same_for_live_and_stored_rows(rows):
    import json

    # The store returns JSON with sorted keys: aggregates and suites come back in another order.
    stored = [json.loads(json.dumps(r, sort_keys=True)) for r in rows]
    assert figures.table_rows(stored) == figures.table_rows(rows)
    header, _ = figures.table_rows(stored)
    assert header[3:7] == ["general", "harmful_refusal", "benign_compliance", "suite demo-general"]
