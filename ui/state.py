"""Per-browser-session state of the dashboard and the shape of a result row (the path policy is in `ui.paths`).

Rows use the results store's point shape (`ResultStore.sweep_points`) so a live sweep and a reopened one are the
same data to the figures, the table and the CSV export.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.config import MergeConfig
    from engine.sweep import PointResult

Row = dict[str, Any]
MAX_CHAT_VARIANTS = 4


def row_from_result(result: PointResult) -> Row:
    """A sweep point as a store-shaped row."""
    return {
        "label": result.label,
        "kind": result.kind,
        "weights": list(result.weights),
        "scores": {
            "aggregates": result.aggregates(),
            "scores": result.scores.to_dict(),
            "heuristic": result.heuristic,
        },
        "timings": dict(result.timings),
        "cached": result.cached,
    }


@dataclass
class Session:
    """What one browser tab sees: its sweep's rows, the config behind each label, its chat conversations."""

    rows: list[Row] = field(default_factory=list)
    configs: dict[str, MergeConfig] = field(default_factory=dict)
    skills: list[str] = field(default_factory=list)
    sweep_id: str | None = None
    general: str = ""  # the sweep's general checkpoint: the engine starts on it
    histories: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # label -> clean chat messages
    # Reference results read from a CSV, drawn beside the sweep (marked imported).
    imported: list[Row] = field(default_factory=list)
    browse: dict[str, str] = field(default_factory=dict)  # the behaviour browser's suite and item
    ab: dict[str, str] = field(default_factory=dict)  # the pending blind pair: a, b, prompt, reply_a, reply_b
    x_metric: str = (
        "general"  # the tradeoff plot's x axis (an aggregate, composite or suite: figures.axis_options)
    )

    def upsert(self, row: Row) -> None:
        for i, old in enumerate(self.rows):
            if old["label"] == row["label"]:
                self.rows[i] = row
                return
        self.rows.append(row)

    def labels(self) -> list[str]:
        return [r["label"] for r in self.rows]

    def row(self, label: str) -> Row | None:
        return next((r for r in self.rows if r["label"] == label), None)
