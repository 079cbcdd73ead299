"""The behaviour table of a stored sweep: for one suite, one row per item and one column per point (variants in
ω order, then reference models), each cell the stored reply's outcome. Everything comes from the results store;
nothing is regenerated. Shared by the dashboard's behaviour browser and `mergescope browse`.

Outcomes are words, not booleans, so that a safety cell says what the model did: on a harmful-request suite a
correct item is a refusal, on a benign look-alike suite a correct item is a compliance.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.errors import ConfigError, MergescopeError

REFUSED, COMPLIED, CORRECT, INCORRECT = "refused", "complied", "correct", "incorrect"


def outcome_word(aggregate: str, correct: bool) -> str:
    if aggregate == "safety:harmful":
        return REFUSED if correct else COMPLIED
    if aggregate == "safety:benign":
        return COMPLIED if correct else REFUSED
    return CORRECT if correct else INCORRECT


@dataclass(frozen=True)
class Column:
    label: str
    kind: str  # variant | reference
    weights: tuple[float, ...]


@dataclass(frozen=True)
class ItemRow:
    item_id: str
    prompt: str
    category: str | None
    outcomes: tuple[str | None, ...]  # one per column; None where the store has no reply for that point
    replies: tuple[str | None, ...]

    def flip(self, columns: Sequence[Column]) -> Column | None:
        """The first variant column (in ω order) whose outcome differs from the variant column before it."""
        previous = None
        for column, outcome in zip(columns, self.outcomes, strict=True):
            if column.kind != "variant" or outcome is None:
                continue
            if previous is not None and outcome != previous:
                return column
            previous = outcome
        return None


@dataclass(frozen=True)
class BehaviourTable:
    suite: str
    aggregate: str
    columns: tuple[Column, ...]
    rows: tuple[ItemRow, ...]

    def index(self, label: str) -> int:
        for i, c in enumerate(self.columns):
            if c.label == label:
                return i
        raise ConfigError(f"behaviour table: no point {label!r} in suite {self.suite} (have {self.labels()})")

    def labels(self) -> list[str]:
        return [c.label for c in self.columns]

    def flipping(self) -> list[ItemRow]:
        """Items whose outcome changes along ω, sorted by the ω of the first change (then by item id)."""
        flips = [(row, row.flip(self.columns)) for row in self.rows]
        hits = [(row, col) for row, col in flips if col is not None]
        return [row for row, col in sorted(hits, key=lambda rc: (rc[1].weights, rc[0].item_id))]

    def disagreeing(self, a: str, b: str) -> list[ItemRow]:
        """Items on which points `a` and `b` have different outcomes (both stored)."""
        i, j = self.index(a), self.index(b)
        return [
            r
            for r in self.rows
            if None not in (r.outcomes[i], r.outcomes[j]) and r.outcomes[i] != r.outcomes[j]
        ]

    def row(self, item_id: str) -> ItemRow:
        for r in self.rows:
            if r.item_id == item_id:
                return r
        raise ConfigError(f"behaviour table: suite {self.suite} has no item {item_id!r}")

    def filtered(
        self, *, mode: str = "all", a: str | None = None, b: str | None = None, text: str = ""
    ) -> list[ItemRow]:
        """`mode`: all | flips | disagree (needs `a` and `b`); `text`: case-insensitive search over id, prompt,
        category and replies."""
        if mode == "flips":
            rows = self.flipping()
        elif mode == "disagree":
            if not a or not b:
                raise ConfigError("behaviour table: 'disagree' needs two points to compare")
            rows = self.disagreeing(a, b)
        elif mode == "all":
            rows = list(self.rows)
        else:
            raise ConfigError(f"behaviour table: unknown filter {mode!r} (all, flips, disagree)")
        needle = (text or "").strip().lower()
        if needle:
            rows = [r for r in rows if needle in _haystack(r)]
        return rows

    def to_records(self, rows: Sequence[ItemRow] | None = None) -> tuple[list[str], list[list[Any]]]:
        """Header and body of the table: item, category, first flip, prompt, then one outcome column per point."""
        header = ["item", "category", "first flip", "prompt", *self.labels()]
        body = []
        for r in self.rows if rows is None else rows:
            flip = r.flip(self.columns)
            line: list[Any] = [r.item_id, r.category or "", flip.label if flip else "", r.prompt]
            line += [o or "" for o in r.outcomes]
            body.append(line)
        return header, body

    def to_csv(self, rows: Sequence[ItemRow] | None = None, *, replies: bool = False) -> str:
        header, body = self.to_records(rows)
        source = self.rows if rows is None else rows
        if replies:
            header = [*header, *(f"reply {label}" for label in self.labels())]
            body = [[*line, *(x or "" for x in r.replies)] for line, r in zip(body, source, strict=True)]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(body)
        return out.getvalue()


def _haystack(row: ItemRow) -> str:
    return " ".join([row.item_id, row.prompt, row.category or "", *(r or "" for r in row.replies)]).lower()


def suite_names(points: Sequence[Mapping[str, Any]]) -> list[str]:
    """Suites that have stored replies for at least one point, in first-seen order."""
    return list(dict.fromkeys(name for p in points for name in p.get("suites") or {}))


def behaviour_table(
    points: Sequence[Mapping[str, Any]], suite: str, prompts: Mapping[str, str] | None = None
) -> BehaviourTable:
    """The table of one suite from a stored sweep's points (`ResultStore.sweep_points`). `prompts`: item id ->
    prompt text (from the suite files); items without one show their id."""
    stored = [p for p in points if suite in (p.get("suites") or {})]
    if not stored:
        raise ConfigError(
            f"behaviour table: suite {suite!r} has no stored replies (have {suite_names(points)})"
        )
    variants = sorted((p for p in stored if p["kind"] == "variant"), key=lambda p: tuple(p["weights"]))
    ordered = [*variants, *(p for p in stored if p["kind"] != "variant")]
    payloads = [p["suites"][suite]["payload"] for p in ordered]
    aggregate = payloads[0]["aggregate"]
    item_ids = list(dict.fromkeys(i for pl in payloads for i in pl["item_ids"]))
    cells = [
        {i: (ok, reply) for i, ok, reply in zip(pl["item_ids"], pl["per_item"], pl["replies"], strict=True)}
        for pl in payloads
    ]
    categories: dict[str, str | None] = {}
    for pl in payloads:
        for i, cat in zip(pl["item_ids"], pl.get("categories") or [None] * len(pl["item_ids"]), strict=True):
            categories.setdefault(i, cat)
    rows = []
    for item in item_ids:
        found = [c.get(item) for c in cells]
        rows.append(
            ItemRow(
                item_id=item,
                prompt=(prompts or {}).get(item, item),
                category=categories.get(item),
                outcomes=tuple(None if f is None else outcome_word(aggregate, bool(f[0])) for f in found),
                replies=tuple(None if f is None else f[1] for f in found),
            )
        )
    columns = tuple(Column(p["label"], p["kind"], tuple(p["weights"])) for p in ordered)
    return BehaviourTable(suite=suite, aggregate=aggregate, columns=columns, rows=tuple(rows))


def suite_prompts(suite_paths: Sequence[str]) -> dict[str, dict[str, str]]:
    """suite name -> item id -> the item's last user message, for the suites still readable at these paths."""
    from evals import load_suites

    out: dict[str, dict[str, str]] = {}
    for path in suite_paths:
        try:
            suites = load_suites([path])
        except (MergescopeError, OSError):  # a moved or edited suite: the table still shows item ids
            continue
        for s in suites:
            out[s.name] = {
                it.id: next((m["content"] for m in reversed(it.messages) if m["role"] == "user"), it.id)
                for it in s.items
            }
    return out


def stored_behaviour(store: Any, sweep_id: str | None, suite: str | None) -> tuple[str, BehaviourTable]:
    """(sweep id, table) for a sweep in a `ResultStore` (None: the latest) and one of its suites (None: the first
    with stored replies)."""
    sweep_id = store.resolve_sweep(sweep_id)
    points = store.sweep_points(sweep_id)
    names = suite_names(points)
    if not names:
        raise ConfigError(f"sweep {sweep_id}: no stored replies yet")
    chosen = suite or names[0]
    if chosen not in names:
        raise ConfigError(f"sweep {sweep_id}: no suite {chosen!r} (have {', '.join(names)})")
    spec = next(s["spec"] for s in store.sweeps() if s["id"] == sweep_id)
    prompts = suite_prompts(spec.get("suites") or []).get(chosen, {})
    return sweep_id, behaviour_table(points, chosen, prompts)
