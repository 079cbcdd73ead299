"""Plotly figures of a sweep. Input: point rows in the results store's shape (`ResultStore.sweep_points`):
`{"label", "kind", "weights", "scores": {"aggregates": {name: {"value","lo","hi","n"}}, "heuristic": bool}}`,
so live results and reopened ones draw the same way. No scoring here: every number comes from the rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

Row = dict[str, Any]

# Reference models get fixed, distinct marker symbols so they read apart from the ω curve.
REFERENCE_SYMBOLS = ("square", "diamond", "cross", "triangle-up", "x", "pentagon", "hexagon", "triangle-down")
# Where a point's label may go, tried in this order; each is the label centre's offset from the marker in
# (label widths, label heights). References often sit close together (skill and CFT models).
TEXT_POSITIONS = {
    "top center": (0.0, 1.0),
    "bottom center": (0.0, -1.0),
    "middle right": (0.6, 0.0),
    "middle left": (-0.6, 0.0),
    "top right": (0.6, 0.8),
    "top left": (-0.6, 0.8),
    "bottom right": (0.6, -0.8),
    "bottom left": (-0.6, -0.8),
}
IMPORTED_COLOUR = "#7f7f7f"
METRIC_TITLES = {
    "general": "general score",
    "harmful_refusal": "harmful-refusal rate",
    "benign_compliance": "benign-compliance rate",
}


def metric_title(name: str) -> str:
    if name.startswith("skill:"):
        return f"{name.removeprefix('skill:')} skill score"
    if name.startswith(COMPOSITE):
        return f"{name.removeprefix(COMPOSITE)} (composite)"
    if name.startswith(SUITE):
        return f"{name.removeprefix(SUITE)} score"
    return METRIC_TITLES.get(name, name)


# Axis names beyond the aggregates: a composite's, and every suite's own score.
COMPOSITE = "composite:"
SUITE = "suite:"


def axis_rows(rows: Sequence[Row], composites: dict[str, Sequence[str]] | None = None) -> list[Row]:
    """The rows with every axis a figure may pick added to their aggregates: `suite:<name>` for each suite's own
    score, and `composite:<name>` for each of `composites` (name -> suite names or aggregates) that the row does
    not carry yet, e.g. one defined after the sweep ran. A composite is only added where all its parts are."""
    from evals.composite import composite_from_dicts

    out = []
    for row in rows:
        axes = dict(aggregates(row))
        suites = ((row.get("scores") or {}).get("scores") or {}).get("suites") or {}
        for name, score in suites.items():
            axes.setdefault(f"{SUITE}{name}", score)
        for name, members in (composites or {}).items():
            parts = [axes.get(m) or axes.get(f"{SUITE}{m}") for m in members]
            if f"{COMPOSITE}{name}" not in axes and parts and all(parts):
                axes[f"{COMPOSITE}{name}"] = composite_from_dicts(parts)
        scores = {**(row.get("scores") or {}), "aggregates": axes}
        out.append({**row, "scores": scores})
    return out


def axis_options(rows: Sequence[Row]) -> list[str]:
    """Every name usable as a figure axis in `rows` (after `axis_rows`): aggregates, composites, suites."""
    names = {name for row in rows for name in aggregates(row)}
    return sorted(names, key=lambda n: (n.startswith(SUITE), not n.startswith(COMPOSITE), *_metric_order(n)))


def aggregates(row: Row) -> dict[str, dict[str, float]]:
    return (row.get("scores") or {}).get("aggregates") or {}


def is_heuristic(row: Row) -> bool:
    return bool((row.get("scores") or {}).get("heuristic"))


def _metric_order(name: str) -> tuple[int, str]:
    # general, then each skill, then the two safety rates (the store returns aggregates in key order).
    rank = {"general": 0, "harmful_refusal": 2, "benign_compliance": 3}
    return (1 if name.startswith("skill:") else rank.get(name, 4), name)


def skill_metrics(rows: Sequence[Row]) -> list[str]:
    """Aggregate names usable as the tradeoff plot's y axis: each skill, then the safety rates."""
    seen = {name for row in rows for name in aggregates(row) if name != "general"}
    return sorted(seen, key=_metric_order)


def default_metric(rows: Sequence[Row], skills: Sequence[str] = (), current: str | None = None) -> str | None:
    """The tradeoff plot's y axis: `current` if the rows have it, else the first swept skill's score (a safety
    skill's score is the harmful-refusal rate), else the first skill metric."""
    metrics = skill_metrics(rows)
    if current in metrics:
        return current
    for candidate in [*(f"skill:{s}" for s in skills), "harmful_refusal"]:
        if candidate in metrics:
            return candidate
    return metrics[0] if metrics else None


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (higher is better on each), sorted by x."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (x2 >= x and y2 >= y) and (x2 > x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


def _empty(title: str, message: str) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(
        title=title,
        template="plotly_white",
        height=460,
        annotations=[dict(text=message, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)],
        xaxis=dict(visible=False),
        yaxis=dict(visible=False),
    )
    return fig


def _weight_text(row: Row) -> str:
    return ", ".join(f"{w:g}" for w in row.get("weights") or [])


def _error(values: list[dict[str, float]]) -> dict[str, Any]:
    return dict(
        type="data",
        symmetric=False,
        array=[s["hi"] - s["value"] for s in values],
        arrayminus=[s["value"] - s["lo"] for s in values],
        thickness=1,
        width=3,
    )


def _hover(row: Row, x: str, y: str) -> str:
    a = aggregates(row)
    parts = [f"<b>{row['label']}</b>"]
    for name in (x, y):
        s = a[name]
        parts.append(f"{metric_title(name)}: {s['value']:.3f} [{s['lo']:.3f}, {s['hi']:.3f}] n={s['n']}")
    return "<br>".join(parts)


def scatter_figure(
    rows: Sequence[Row], x: str, y: str, *, title: str, imported: Sequence[Row] = ()
) -> go.Figure:
    """x vs y for every point that has both: variants coloured by ω (line in ω order), the |D|/|G| point as a
    star, references as labelled distinct markers, the Pareto front dashed, 95% intervals as error bars."""
    usable = [r for r in rows if x in aggregates(r) and y in aggregates(r)]
    if not usable:
        return _empty(title, "No points yet: run a sweep (or load a stored one).")
    fig = go.Figure()
    variants = sorted((r for r in usable if r["kind"] == "variant"), key=lambda r: tuple(r["weights"]))
    if variants:
        xs = [aggregates(r)[x] for r in variants]
        ys = [aggregates(r)[y] for r in variants]
        colour = [r["weights"][0] if r["weights"] else 0.0 for r in variants]
        fig.add_trace(
            go.Scatter(
                x=[s["value"] for s in xs],
                y=[s["value"] for s in ys],
                mode="lines+markers" if all(len(r["weights"]) == 1 for r in variants) else "markers",
                name="merge ω",
                line=dict(color="rgba(120,120,120,0.4)", width=1),
                marker=dict(
                    size=11,
                    color=colour,
                    colorscale="Viridis",
                    showscale=True,
                    colorbar=dict(title="ω", thickness=12),
                    line=dict(width=1, color="white"),
                ),
                error_x=_error(xs),
                error_y=_error(ys),
                text=[r["label"] for r in variants],
                customdata=[r["label"] for r in variants],  # what a click on the point sends to the chat
                hovertext=[_hover(r, x, y) for r in variants],
                hoverinfo="text",
            )
        )
    refs = [r for r in usable if r["kind"] != "variant"]
    coords = [(aggregates(r)[x]["value"], aggregates(r)[y]["value"]) for r in usable]
    labelled = [r for r in variants if is_heuristic(r)] + refs
    positions = dict(
        zip(
            (r["label"] for r in labelled),
            label_positions(
                [(aggregates(r)[x]["value"], aggregates(r)[y]["value"]) for r in labelled],
                [len(_point_text(r)) for r in labelled],
                obstacles=coords,
            ),
            strict=True,
        )
    )
    for row in (r for r in variants if is_heuristic(r)):
        fig.add_trace(
            go.Scatter(
                x=[aggregates(row)[x]["value"]],
                y=[aggregates(row)[y]["value"]],
                mode="markers+text",
                name=f"|D|/|G| heuristic ({_weight_text(row)})",
                marker=dict(symbol="star", size=22, color="gold", line=dict(width=1.5, color="black")),
                text=[_point_text(row)],
                textposition=positions[row["label"]],
                customdata=[row["label"]],
                hovertext=[_hover(row, x, y)],
                hoverinfo="text",
            )
        )
    for i, row in enumerate(refs):
        xs, ys = [aggregates(row)[x]], [aggregates(row)[y]]
        fig.add_trace(
            go.Scatter(
                x=[xs[0]["value"]],
                y=[ys[0]["value"]],
                mode="markers+text",
                name=row["label"],
                marker=dict(symbol=REFERENCE_SYMBOLS[i % len(REFERENCE_SYMBOLS)], size=13, color="#d62728"),
                text=[_point_text(row)],
                textposition=positions[row["label"]],
                customdata=[row["label"]],
                error_x=_error(xs),
                error_y=_error(ys),
                hovertext=[_hover(row, x, y)],
                hoverinfo="text",
            )
        )
    _add_imported(fig, imported, x, y)
    front = pareto_front(coords)
    if len(front) > 1:
        fig.add_trace(
            go.Scatter(
                x=[coords[i][0] for i in front],
                y=[coords[i][1] for i in front],
                mode="lines",
                name="Pareto front",
                line=dict(dash="dash", color="black", width=1.5),
                hoverinfo="skip",
            )
        )
    fig.update_layout(
        title=title,
        template="plotly_white",
        height=460,
        xaxis=dict(title=metric_title(x), range=fitted_range(_extent(usable, imported, x))),
        yaxis=dict(title=metric_title(y), range=fitted_range(_extent(usable, imported, y))),
        legend=dict(orientation="h", y=-0.18),
        margin=dict(l=60, r=20, t=50, b=40),
    )
    return fig


def _point_text(row: Row) -> str:
    return "|D|/|G|" if is_heuristic(row) and row["kind"] == "variant" else row["label"]


def _extent(rows: Sequence[Row], imported: Sequence[Row], metric: str) -> list[float]:
    """Every value an axis must show: the points and the ends of their intervals."""
    out = []
    for r in [*rows, *imported]:
        s = aggregates(r).get(metric)
        if s is not None:
            out += [s["value"], s.get("lo", s["value"]), s.get("hi", s["value"])]
    return out


def fitted_range(values: Sequence[float], *, pad: float = 0.08, min_span: float = 0.1) -> list[float]:
    """An axis range around `values` (with a margin, at least `min_span` wide, kept within [0, 1] plus the margin)
    so the points use the plot instead of crowding one corner of fixed 0-1 axes."""
    if not values:
        return [-0.03, 1.03]
    lo, hi = min(values), max(values)
    if hi - lo < min_span:
        mid = (lo + hi) / 2
        lo, hi = mid - min_span / 2, mid + min_span / 2
    margin = pad * (hi - lo)
    return [max(lo - margin, -0.03), min(hi + margin, 1.03)]


def label_positions(
    points: Sequence[tuple[float, float]],
    lengths: Sequence[int],
    *,
    obstacles: Sequence[tuple[float, float]] = (),
    char_w: float = 0.012,
    line_h: float = 0.035,
) -> list[str]:
    """A plotly `textposition` per labelled point such that no two labels' boxes overlap (greedy: each label takes
    the first position whose box clears the labels placed so far and the markers in `obstacles`; failing that, the
    position overlapping least). Sizes are in axis units of a 0-1 plot: `char_w` per character, `line_h` high."""
    placed: list[tuple[float, float, float, float]] = []  # label boxes: x0, y0, x1, y1
    marker = line_h / 3
    markers = [(ox - marker, oy - marker, ox + marker, oy + marker) for ox, oy in obstacles]
    chosen = []
    for (px, py), n in zip(points, lengths, strict=True):
        w, h = max(n, 1) * char_w, line_h
        best, best_cost, best_box = "top center", float("inf"), (px, py, px, py)
        for name, (dx, dy) in TEXT_POSITIONS.items():
            cx, cy = px + dx * w, py + dy * h
            box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
            cost = sum(_overlap(box, other) for other in placed) * 10 + sum(_overlap(box, m) for m in markers)
            if cost < best_cost - 1e-12:
                best, best_cost, best_box = name, cost, box
            if cost == 0:
                break
        placed.append(best_box)
        chosen.append(best)
    return chosen


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def _add_imported(fig: go.Figure, imported: Sequence[Row], x: str, y: str) -> None:
    """Imported reference results (a paper's table, another tool's export): hollow grey markers, named so."""
    rows = [r for r in imported if x in aggregates(r) and y in aggregates(r)]
    if not rows:
        return
    fig.add_trace(
        go.Scatter(
            x=[aggregates(r)[x]["value"] for r in rows],
            y=[aggregates(r)[y]["value"] for r in rows],
            mode="markers+text",
            name="imported (CSV)",
            marker=dict(symbol="circle-open", size=12, color=IMPORTED_COLOUR, line=dict(width=2)),
            text=[f"{r['label']} (imported)" for r in rows],
            textposition="bottom center",
            textfont=dict(color=IMPORTED_COLOUR, size=10),
            hovertext=[f"<b>{r['label']}</b> (imported)<br>{_hover_values(r, x, y)}" for r in rows],
            hoverinfo="text",
        )
    )


def _hover_values(row: Row, x: str, y: str) -> str:
    a = aggregates(row)
    return "<br>".join(f"{metric_title(n)}: {a[n]['value']:.3f}" for n in (x, y))


def tradeoff_figure(
    rows: Sequence[Row], y: str | None = None, *, imported: Sequence[Row] = (), x: str = "general"
) -> go.Figure:
    """A general axis (x; default the pooled general score, or any composite or suite: see `axis_options`)
    against a skill score (y; default the first skill)."""
    metrics = skill_metrics(rows)
    y = y if y in metrics else (metrics[0] if metrics else "skill")
    return scatter_figure(
        rows, x, y, title=f"Tradeoff: {metric_title(x)} vs {metric_title(y)}", imported=imported
    )


def plot_html(
    rows: Sequence[Row], y: str | None = None, *, imported: Sequence[Row] = (), x: str = "general"
) -> str:
    """The tradeoff and safety plots of a sweep as one self-contained HTML page (plotly.js inlined, so it opens
    offline): what the dashboard's Export tab and `mergescope sweep --plot` write."""
    trade = tradeoff_figure(axis_rows(rows), y, imported=imported, x=x)
    safety = safety_figure(rows, imported=imported)
    body = trade.to_html(include_plotlyjs=True, full_html=False)
    body += safety.to_html(include_plotlyjs=False, full_html=False)
    return f"<html><head><meta charset='utf-8'></head><body>{body}</body></html>"


def safety_figure(rows: Sequence[Row], *, imported: Sequence[Row] = ()) -> go.Figure:
    """Over-refusal view: benign-compliance (x, want high) against harmful-refusal (y, want high)."""
    return scatter_figure(
        rows,
        "benign_compliance",
        "harmful_refusal",
        title="Safety: harmful-refusal vs benign-compliance",
        imported=imported,
    )


def grid_heatmaps(rows: Sequence[Row], skills: Sequence[str] = ("ω1", "ω2")) -> go.Figure:
    """For a 2-D grid: one heatmap per aggregate over (ω1, ω2)."""
    grid = [r for r in rows if r["kind"] == "variant" and len(r.get("weights") or []) == 2]
    if not grid:
        return _empty("Grid heatmaps", "Heatmaps appear for a 2-D grid sweep over two skills.")
    metrics = ["general", *skill_metrics(grid)]
    metrics = [m for m in metrics if any(m in aggregates(r) for r in grid)]
    w1 = sorted({r["weights"][0] for r in grid})
    w2 = sorted({r["weights"][1] for r in grid})
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=[metric_title(m) for m in metrics])
    for col, metric in enumerate(metrics, start=1):
        z: list[list[float | None]] = [[None] * len(w1) for _ in w2]
        cells: list[list[str]] = [[""] * len(w1) for _ in w2]  # each cell's point label, for click-to-chat
        for r in grid:
            i, j = w2.index(r["weights"][1]), w1.index(r["weights"][0])
            cells[i][j] = r["label"]
            s = aggregates(r).get(metric)
            if s is not None:
                z[i][j] = s["value"]
        fig.add_trace(
            go.Heatmap(
                x=[f"{w:g}" for w in w1],
                y=[f"{w:g}" for w in w2],
                z=z,
                zmin=0,
                zmax=1,
                colorscale="Viridis",
                showscale=col == len(metrics),
                texttemplate="%{z:.2f}",
                customdata=cells,
                hovertemplate="%{customdata}: %{z:.3f}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        fig.update_xaxes(title_text=f"ω {skills[0]}", row=1, col=col)
        fig.update_yaxes(title_text=f"ω {skills[1]}", row=1, col=col)
    fig.update_layout(template="plotly_white", height=380, title="Grid: scores over (ω1, ω2)")
    return fig


def table_rows(rows: Sequence[Row]) -> tuple[list[str], list[list[Any]]]:
    """Header and rows for the results table: label, kind, ω, every aggregate, then every suite's score."""
    agg_names: list[str] = []
    suite_names: list[str] = []
    for r in rows:
        scores = r.get("scores") or {}
        agg_names += [n for n in scores.get("aggregates") or {} if n not in agg_names]
        suite_names += [n for n in (scores.get("scores") or {}).get("suites") or {} if n not in suite_names]
    agg_names.sort(key=_metric_order)
    suite_names.sort()  # live rows keep the sweep's order, stored ones come back sorted: one order for both
    header = ["label", "kind", "ω", *agg_names, *(f"suite {n}" for n in suite_names)]
    body = []
    for r in rows:
        scores = r.get("scores") or {}
        suites = (scores.get("scores") or {}).get("suites") or {}
        line: list[Any] = [r["label"] + (" ★" if is_heuristic(r) else ""), r["kind"], _weight_text(r)]
        line += [_fmt(aggregates(r).get(n)) for n in agg_names]
        line += [_fmt(suites.get(n)) for n in suite_names]
        body.append(line)
    return header, body


def _fmt(score: dict[str, float] | None) -> float | None:
    return None if score is None else round(score["value"], 3)


def norms_figure(diag: dict[str, Any]) -> go.Figure:
    """Per-layer L2 norm of each task vector (`TaskVectorDiagnostics.to_dict()`)."""
    fig = go.Figure()
    for skill, norms in diag["layer_norms"].items():
        fig.add_trace(go.Bar(x=diag["groups"], y=norms, name=f"τ {skill}"))
    fig.update_layout(
        title="Task-vector norm per layer",
        template="plotly_white",
        barmode="group",
        height=340,
        yaxis=dict(title="L2 norm of τ"),
    )
    return fig


def interference_figure(diag: dict[str, Any]) -> go.Figure:
    """Cosine similarity between skill vectors as a heatmap, with the sign-conflict rate in each cell."""
    skills = diag["skills"]
    if len(skills) < 2:
        return _empty(
            "Interference",
            "Interference needs two or more skills: list another one in the skills box (NAME=PATH per line).",
        )
    index = {s: i for i, s in enumerate(skills)}
    z = [[1.0 if i == j else None for j in range(len(skills))] for i in range(len(skills))]
    text = [["" for _ in skills] for _ in skills]
    for pair in diag["pairs"]:
        i, j = index[pair["a"]], index[pair["b"]]
        z[i][j] = z[j][i] = pair["cosine"]
        text[i][j] = text[j][i] = (
            f"cos {pair['cosine']:+.3f}<br>sign conflict {100 * pair['sign_conflict']:.1f}%"
        )
    fig = go.Figure(
        go.Heatmap(
            x=skills, y=skills, z=z, zmin=-1, zmax=1, colorscale="RdBu", text=text, texttemplate="%{text}"
        )
    )
    fig.update_layout(title="Interference between skill vectors", template="plotly_white", height=340)
    return fig


def strength_figure(strengths: Sequence[Any], rows: Sequence[Row], metric: str | None = None) -> go.Figure:
    """Bradley–Terry strength from blind votes (left axis, with its interval) against ω, beside the automatic
    scores of the same points (right axis: general and `metric`). `strengths`: `engine.bradley_terry.Strength`s
    named by point label; 1-D variants are placed at their ω, other points are left to the hover of the table."""
    title = "Blind votes: Bradley–Terry strength vs ω"
    by_label = {r["label"]: r for r in rows}
    placed = [
        (by_label[s.name]["weights"][0], s)
        for s in strengths
        if s.name in by_label and len(by_label[s.name].get("weights") or []) == 1 and s.votes
    ]
    if not placed:
        return _empty(title, "No votes yet: ask two variants, then vote A / B / tie / both bad.")
    placed.sort(key=lambda ws: ws[0])
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(
        go.Scatter(
            x=[w for w, _ in placed],
            y=[s.value for _, s in placed],
            mode="lines+markers",
            name="vote strength (BT, log)",
            marker=dict(size=11, color="#1f77b4"),
            error_y=_error([{"value": s.value, "lo": s.lo, "hi": s.hi} for _, s in placed]),
            customdata=[s.name for _, s in placed],
            hovertext=[
                f"<b>{s.name}</b><br>strength {s.value:+.2f} [{s.lo:+.2f}, {s.hi:+.2f}]<br>{s.votes} votes"
                for _, s in placed
            ],
            hoverinfo="text",
        ),
        secondary_y=False,
    )
    variants = sorted(
        (r for r in rows if r["kind"] == "variant" and len(r.get("weights") or []) == 1),
        key=lambda r: r["weights"],
    )
    for name, dash in (("general", "dot"), (metric, "dash")):
        have = [r for r in variants if name and name in aggregates(r)]
        if have:
            fig.add_trace(
                go.Scatter(
                    x=[r["weights"][0] for r in have],
                    y=[aggregates(r)[name]["value"] for r in have],
                    mode="lines",
                    name=f"{metric_title(name)} (automatic)",
                    line=dict(dash=dash, width=1.5),
                    hoverinfo="skip",
                ),
                secondary_y=True,
            )
    fig.update_layout(title=title, template="plotly_white", height=420, legend=dict(orientation="h", y=-0.2))
    fig.update_xaxes(title_text="ω")
    fig.update_yaxes(title_text="Bradley–Terry strength (log, 0 = average)", secondary_y=False)
    fig.update_yaxes(title_text="automatic score", range=[0, 1.03], secondary_y=True)
    return fig
