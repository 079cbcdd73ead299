"""Reference results from elsewhere (a paper's published table, another tool's export, our own results CSV) read
from a CSV into point rows of the results store's shape, so they can be drawn beside a live sweep.

Columns: `variant` (or `label`), optionally `ω`/`omega`/`weight`/`w1`, then metric columns named like the
sweep's aggregates (`general`, `harmful_refusal`, `benign_compliance`, `skill:NAME`; a bare `NAME` that is not
one of those is read as `skill:NAME`), each optionally with `NAME_lo` / `NAME_hi` / `NAME_n`. A metric column
whose values exceed 1 is read as percentages. Other text columns (`kind`, `heuristic`, timings) are ignored.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from engine.errors import ConfigError

LABEL_COLUMNS = ("variant", "label", "model", "name")
WEIGHT_COLUMNS = ("ω", "omega", "weight", "w", "w1")
KNOWN = ("general", "harmful_refusal", "benign_compliance")
IGNORED = {"kind", "heuristic", "swap_s", "generate_s", "score_s", "w2", "w3", "w4"}
SUFFIXES = ("_lo", "_hi", "_n")


def _metric_name(column: str) -> str:
    return column if column in KNOWN or column.startswith("skill:") else f"skill:{column}"


def _number(text: str, *, where: str) -> float | None:
    text = (text or "").strip().rstrip("%")
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{where}: {text!r} is not a number") from None


def read_reference_csv(text: str, *, source: str) -> list[dict[str, Any]]:
    """Rows `{"label", "kind": "imported", "weights", "scores": {"aggregates": {...}}, "source"}` from CSV text;
    errors name `source`, the line and the column."""
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in reader.fieldnames or []]
    label_col = next((h for h in header if h.lower() in LABEL_COLUMNS), None)
    if label_col is None:
        raise ConfigError(
            f"{source}: no variant column (expected one of {', '.join(LABEL_COLUMNS)}; have {header})"
        )
    weight_col = next((h for h in header if h.lower() in WEIGHT_COLUMNS), None)
    metrics = [
        h
        for h in header
        if h not in (label_col, weight_col) and h.lower() not in IGNORED and not h.endswith(SUFFIXES)
    ]
    if not metrics:
        raise ConfigError(
            f"{source}: no metric columns besides {label_col!r} (e.g. general, harmful_refusal)"
        )
    rows: list[dict[str, Any]] = []
    raw: list[dict[str, dict[str, float | None]]] = []
    for line_no, record in enumerate(reader, start=2):
        record = {(k or "").strip(): v for k, v in record.items()}
        label = (record.get(label_col) or "").strip()
        if not label:
            raise ConfigError(f"{source}, line {line_no}: column {label_col!r} is empty")
        weight = (
            _number(record.get(weight_col, ""), where=f"{source}, line {line_no}, column {weight_col!r}")
            if weight_col
            else None
        )
        values: dict[str, dict[str, float | None]] = {}
        for m in metrics:
            where = f"{source}, line {line_no}, column {{}}"
            value = _number(record.get(m, ""), where=where.format(repr(m)))
            if value is None:
                continue
            values[m] = {
                "value": value,
                **{s: _number(record.get(m + s, ""), where=where.format(repr(m + s))) for s in SUFFIXES},
            }
        raw.append(values)
        rows.append(
            {
                "label": label,
                "kind": "imported",
                "weights": [] if weight is None else [weight],
                "source": source,
            }
        )
    if not rows:
        raise ConfigError(f"{source}: no data rows")
    percent = {m for m in metrics if any(v[m]["value"] > 1 for v in raw if m in v)}
    for row, values in zip(rows, raw, strict=True):
        aggregates = {}
        for m, v in values.items():
            scale = 100.0 if m in percent else 1.0
            value = v["value"] / scale
            lo = v["_lo"] / scale if v["_lo"] is not None else value
            hi = v["_hi"] / scale if v["_hi"] is not None else value
            aggregates[_metric_name(m)] = {"value": value, "lo": lo, "hi": hi, "n": int(v["_n"] or 0)}
        row["scores"] = {"aggregates": aggregates, "heuristic": False}
    return rows
