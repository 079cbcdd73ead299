"""Score replies produced elsewhere (`mergescope score`) or stored by a sweep (re-scoring with another judge).

A replies file is JSON Lines: `{"id": ..., "reply": ...}` or `{"prompt": ..., "reply": ...}` per line, naming
an item by its id as the suite stores it or by its exact prompt text (the last user message); an optional
`"suite"` names the suite where several suites given together share an id. Every line must
match exactly one item of the given suites, once; a line that matches none, a second reply for one item, or a
malformed line is a SuiteError naming the file and line number. Items without a reply are left out of the
scores and counted as missing.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evals.aggregate import SuiteResult
from evals.errors import SuiteError
from evals.refusal import RefusalClassifier
from evals.stats import Score
from evals.suite import Item, Suite


@dataclass(frozen=True)
class Scored:
    """One suite's result over the items that had replies, and how many had none."""

    result: SuiteResult | None  # None when no item of the suite had a reply
    n_items: int
    missing: int


Hit = tuple[Suite, Item]


def _index(suites: Sequence[Suite]) -> tuple[dict[str, list[Hit]], dict[str, list[Hit]]]:
    """Items by id and by prompt text; a key may name items of several suites (then a line needs 'suite')."""
    by_id: dict[str, list[Hit]] = {}
    by_prompt: dict[str, list[Hit]] = {}
    for s in suites:
        for it in s.items:
            by_id.setdefault(it.id, []).append((s, it))
            by_prompt.setdefault(it.messages[-1]["content"], []).append((s, it))
    return by_id, by_prompt


def _pick(where: str, what: str, hits: list[Hit], suite_name: Any, names: str) -> Hit:
    if suite_name is not None:
        hits = [h for h in hits if h[0].name == suite_name]
    if not hits:
        in_suite = f"suite {suite_name!r}" if suite_name is not None else names
        raise SuiteError(f"{where}: {what} matches no item of {in_suite}")
    if len(hits) > 1:
        both = ", ".join(h[0].name for h in hits)
        raise SuiteError(f"{where}: {what} matches items of several suites ({both}); add a 'suite' field")
    return hits[0]


def read_replies(path: str | os.PathLike, suites: Sequence[Suite]) -> dict[str, dict[str, str]]:
    """suite name -> {item id: reply}, validated line by line (see the module docstring)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SuiteError(f"replies file {p}: cannot read ({e})") from e
    by_id, by_prompt = _index(suites)
    out: dict[str, dict[str, str]] = {s.name: {} for s in suites}
    first_line: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"replies file {p} line {lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise SuiteError(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from e
        if not isinstance(obj, dict):
            raise SuiteError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        if not isinstance(obj.get("reply"), str):
            raise SuiteError(f"{where}: field 'reply' must be a string")
        unknown = sorted(set(obj) - {"id", "prompt", "reply", "suite"})
        if unknown:
            raise SuiteError(
                f"{where}: unknown field(s) {', '.join(unknown)} (known: id, prompt, reply, suite)"
            )
        if ("id" in obj) == ("prompt" in obj):
            raise SuiteError(f"{where}: needs exactly one of 'id' or 'prompt'")
        if "id" in obj:
            if isinstance(obj["id"], bool) or not isinstance(obj["id"], str | int):
                raise SuiteError(f"{where}: field 'id' must be a string or an integer")
            hits = by_id.get(str(obj["id"]), [])
            what = f"id {obj['id']!r}"
        else:
            hits = by_prompt.get(obj["prompt"], []) if isinstance(obj["prompt"], str) else []
            what = f"prompt {str(obj['prompt'])[:60]!r}"
        suite, item = _pick(where, what, hits, obj.get("suite"), ", ".join(s.name for s in suites))
        key = f"{suite.name}\0{item.id}"
        if key in first_line:
            raise SuiteError(
                f"{where}: a second reply for item {item.id!r} of {suite.name} (first on line {first_line[key]})"
            )
        first_line[key] = lineno
        out[suite.name][item.id] = obj["reply"]
    if not first_line:
        raise SuiteError(f"replies file {p}: no replies in it")
    return out


def score_given(
    suite: Suite, replies: Mapping[str, str], *, classifier: RefusalClassifier | None = None
) -> Scored:
    """Score the items of `suite` that have a reply (in suite order); count the others as missing."""
    items = [it for it in suite.items if it.id in replies]
    missing = len(suite.items) - len(items)
    if not items:
        return Scored(None, len(suite.items), missing)
    texts = [replies[it.id] for it in items]
    per_item, outcomes = suite.scorer_impl.score_detailed(items, texts, suite.scorer_args, classifier)
    result = SuiteResult(
        suite=suite.name,
        suite_key=suite.key(),
        aggregate=suite.aggregate,
        score=Score.from_counts(sum(per_item), len(per_item)),
        per_item=per_item,
        item_ids=[it.id for it in items],
        replies=texts,
        scorer=suite.scorer_impl.identity(suite.scorer_args, classifier),
        categories=[it.category for it in items],
        outcomes=outcomes,
    )
    return Scored(result, len(suite.items), missing)


def report(scored: Mapping[str, Scored]) -> dict[str, Any]:
    """The --json document: per suite its score, per-category scores, outcome counts and missing count;
    every scored item's outcome."""
    suites: dict[str, Any] = {}
    items: list[dict[str, Any]] = []
    for name, sc in scored.items():
        r = sc.result
        entry: dict[str, Any] = {
            "items": sc.n_items,
            "scored": sc.n_items - sc.missing,
            "missing": sc.missing,
        }
        if r is not None:
            entry.update(
                aggregate=r.aggregate, scorer=r.scorer, suite_key=r.suite_key, score=r.score.to_dict()
            )
            cats = r.by_category()
            if cats:
                entry["by_category"] = {c: s.to_dict() for c, s in cats.items()}
            if r.outcomes is not None and r.aggregate.startswith("safety"):
                entry["outcomes"] = dict(sorted(Counter(r.outcomes).items()))
            for i, iid in enumerate(r.item_ids):
                row: dict[str, Any] = {"suite": name, "id": iid, "correct": r.per_item[i]}
                if r.outcomes is not None:
                    row["outcome"] = r.outcomes[i]
                items.append(row)
        suites[name] = entry
    return {"suites": suites, "items": items}


def format_report(doc: Mapping[str, Any]) -> str:
    """Human-readable lines of a report() document."""
    lines = []
    for name, e in doc["suites"].items():
        head = f"{name}: "
        if "score" in e:
            head += Score.from_dict(e["score"]).format()
        else:
            head += "no replies"
        if e["missing"]:
            head += f"  ({e['missing']} of {e['items']} items have no reply; scored over {e['scored']})"
        lines.append(head)
        if "scorer" in e:
            lines.append(f"  scorer {e['scorer']}, axis {e['aggregate']}")
        if "outcomes" in e:
            lines.append("  " + ", ".join(f"{k} {v}" for k, v in e["outcomes"].items()))
        for cat, s in (e.get("by_category") or {}).items():
            lines.append(f"  {cat:28} {Score.from_dict(s).format()}")
    return "\n".join(lines)
