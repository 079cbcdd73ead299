"""Composite axes: the mean of chosen suites' scores, its interval, the CLI's --composite, and the figures'
axis options (suites and composites, also for stored rows whose sweep named none)."""

from __future__ import annotations

import math

import pytest

from evals.composite import composite_score, parse_composite
from evals.errors import SuiteError
from evals.stats import Score


def test_composite_is_the_unweighted_mean_with_a_narrower_interval():
    a, b = Score.from_counts(30, 40), Score.from_counts(10, 400)
    c = composite_score([a, b])
    assert c.value == pytest.approx((0.75 + 0.025) / 2)  # each suite counts once, whatever its size
    assert c.n == 440
    half_a = (a.hi - a.lo) / 2
    # Two independent parts averaged: the half-width is sqrt(h_a² + h_b²) / 2, below the wider part's.
    assert (c.hi - c.lo) / 2 == pytest.approx(math.hypot(half_a, (b.hi - b.lo) / 2) / 2)
    assert (c.hi - c.lo) / 2 < half_a
    same = composite_score([a])
    assert same.value == a.value and same.hi - same.lo == pytest.approx(a.hi - a.lo)


def test_parse_composite_and_its_errors():
    assert parse_composite("general=demo-general, lm-eval:arc_easy") == (
        "general",
        ["demo-general", "lm-eval:arc_easy"],
    )
    for bad in ("general", "=a,b", "general="):
        with pytest.raises(SuiteError, match="--composite"):
            parse_composite(bad)
    with pytest.raises(SuiteError):
        composite_score([])


def test_cli_rejects_a_composite_over_an_unknown_suite(demo_family, capsys):
    from engine.cli import main

    code = main(["sweep", "--composite", "avg=demo-general,nope", "--weights", "0", "--store", "/nonexistent/x.db"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--composite avg" in err and "nope" in err and "demo-general" in err


def _row(label, suites, aggregates):
    return {
        "label": label,
        "kind": "variant",
        "weights": [0.5],
        "scores": {"aggregates": aggregates, "scores": {"suites": suites}, "heuristic": False},
    }


def test_figures_offer_every_suite_and_composite_as_an_axis():
    from ui import figures

    s1, s2 = Score.from_counts(3, 4).to_dict(), Score.from_counts(1, 4).to_dict()
    rows = [_row("ω=0.5", {"demo-general": s1, "demo-math": s2}, {"general": s1, "skill:math": s2})]
    rows = figures.axis_rows(rows, {"avg": ["demo-general", "demo-math"]})
    options = figures.axis_options(rows)
    assert options[0] == "composite:avg"
    assert {"general", "skill:math", "suite:demo-general", "suite:demo-math"} <= set(options)
    assert figures.aggregates(rows[0])["composite:avg"]["value"] == pytest.approx(0.5)
    fig = figures.tradeoff_figure(rows, "suite:demo-math", x="composite:avg")
    assert fig.data[0].x[0] == pytest.approx(0.5) and fig.data[0].y[0] == pytest.approx(0.25)
    assert "avg (composite)" in fig.layout.title.text
    # A composite whose parts a row lacks is left out, not guessed.
    assert "composite:x" not in figures.aggregates(figures.axis_rows(rows, {"x": ["absent"]})[0])
