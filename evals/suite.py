"""Eval suites as data: a folder with `suite.yaml` (manifest) and `items.jsonl` (one item a line).

Loading validates everything up front — manifest fields, scorer and its arguments, every item — so a sweep
never discovers a bad suite after the engine has started. Every error is a SuiteError naming the file and,
for items, the line number and field.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from evals.errors import SuiteError
from evals.scorers import SCORERS, Scorer

MANIFEST = "suite.yaml"
DEFAULT_ITEMS = "items.jsonl"

_MANIFEST_KEYS = {
    "name",
    "version",
    "scorer",
    "scorer_args",
    "aggregate",
    "generation",
    "items",
    "description",
}
_REQUIRED_KEYS = ("name", "version", "scorer", "aggregate")
_ITEM_KEYS = {"id", "prompt", "messages", "answer", "category", "test"}
_ROLES = {"system", "user", "assistant"}
# Same names and ranges as the serving side's GenerationSettings (which checks again when it builds one);
# checked here too so a typo fails at load time, naming this file, before any engine starts.
_GENERATION_RULES: dict[str, tuple[tuple[type, ...], str, Callable[[float], bool]]] = {
    "max_tokens": ((int,), "an integer >= 1", lambda v: v >= 1),
    "temperature": ((int, float), "a number >= 0", lambda v: v >= 0),
    "top_p": ((int, float), "a number in (0, 1]", lambda v: 0 < v <= 1),
    "seed": ((int,), "an integer", lambda v: True),
}
_SKILL_RE = re.compile(r"^skill:([A-Za-z0-9][A-Za-z0-9_.-]*)$")
AGGREGATES = ("general", "skill:<name>", "safety:harmful", "safety:benign", "safety")


@dataclass(frozen=True)
class Item:
    """One eval item. `answers` is None when the item carries no answer; `line` is its 1-based JSONL line."""

    id: str
    messages: tuple[Mapping[str, str], ...]
    answers: tuple[str, ...] | None = None
    category: str | None = None
    test: str | None = None
    line: int = 0

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "messages": [dict(m) for m in self.messages]}
        if self.answers is not None:
            d["answer"] = list(self.answers)
        if self.category is not None:
            d["category"] = self.category
        if self.test is not None:
            d["test"] = self.test
        return d


@dataclass(frozen=True, eq=False)  # identity semantics: compare suites by key(); dict fields are unhashable
class Suite:
    name: str
    version: int | str
    scorer: str
    scorer_args: Mapping[str, Any]
    aggregate: str  # resolved: general | skill:<name> | safety:harmful | safety:benign
    generation: Mapping[str, Any]
    items: tuple[Item, ...]
    path: Path  # the manifest file
    description: str = ""

    def __len__(self) -> int:
        return len(self.items)

    def prompts(self) -> list[list[dict[str, str]]]:
        """Chat messages per item, in item order (fresh dicts: callers may mutate them)."""
        return [[dict(m) for m in it.messages] for it in self.items]

    def key(self) -> str:
        """Stable identity for the results store: name, version and a hash of the manifest, the items and what
        decides correctness (for refusal suites, the classifier in force — so a global phrase-list change
        does not reuse results scored with the old list). Editing an item without bumping the version still
        changes the key."""
        scorer_id = self.scorer_impl.identity(self.scorer_args)
        digest = hashlib.sha256(f"{self._content_hash}\n{scorer_id}".encode()).hexdigest()[:16]
        return f"{self.name}@{self.version}:{digest}"

    @functools.cached_property
    def _content_hash(self) -> str:
        manifest = {
            "scorer": self.scorer,
            "scorer_args": dict(self.scorer_args),
            "aggregate": self.aggregate,
            "generation": dict(self.generation),
        }
        blob = json.dumps(
            {"manifest": manifest, "items": [it.to_json() for it in self.items]},
            sort_keys=True,
            ensure_ascii=False,
            separators=(",", ":"),
        )
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    @property
    def scorer_impl(self) -> Scorer:
        return SCORERS[self.scorer]


def _resolve_manifest_path(path: Path) -> Path:
    if path.is_dir():
        m = path / MANIFEST
        if not m.is_file():
            raise SuiteError(f"suite folder {path}: no {MANIFEST} in it")
        return m
    if path.is_file():
        if path.suffix not in (".yaml", ".yml"):
            raise SuiteError(f"suite {path}: expected a suite folder or its {MANIFEST} manifest")
        return path
    raise SuiteError(f"suite {path}: no such file or folder")


# Far above any real suite (GSM8K's test set is ~1 MB of JSONL), low enough that a wrong file (a checkpoint, a
# log) is refused at once instead of being read into memory.
MAX_MANIFEST_BYTES = 1 * 2**20
MAX_ITEMS_BYTES = 256 * 2**20


def _check_size(path: Path, limit: int, what: str) -> None:
    try:
        size = path.stat().st_size
    except OSError:
        return  # the read that follows reports it
    if size > limit:
        raise SuiteError(f"{what} {path}: {size:,} bytes is too large for a suite file (limit {limit:,})")


def _read_manifest(mpath: Path) -> dict[str, Any]:
    _check_size(mpath, MAX_MANIFEST_BYTES, "suite manifest")
    try:
        data = yaml.safe_load(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise SuiteError(f"suite manifest {mpath}: cannot read ({getattr(e, 'strerror', None) or e})") from e
    except yaml.YAMLError as e:
        raise SuiteError(f"suite manifest {mpath}: invalid YAML ({e})") from e
    if not isinstance(data, dict):
        raise SuiteError(f"suite manifest {mpath}: expected a mapping of fields, got {type(data).__name__}")
    unknown = sorted(set(map(str, data)) - _MANIFEST_KEYS)
    if unknown:
        raise SuiteError(
            f"suite manifest {mpath}: unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(_MANIFEST_KEYS))})"
        )
    for k in _REQUIRED_KEYS:
        if k not in data or data[k] is None or data[k] == "":
            raise SuiteError(f"suite manifest {mpath}: missing field '{k}'")
    if not isinstance(data["name"], str):
        raise SuiteError(f"suite manifest {mpath}: field 'name' must be a string")
    if isinstance(data["version"], bool) or not isinstance(data["version"], int | str):
        raise SuiteError(f"suite manifest {mpath}: field 'version' must be an integer or string")
    return data


def _check_generation(mpath: Path, gen: Any) -> dict[str, Any]:
    if gen is None:
        return {}
    if not isinstance(gen, dict):
        raise SuiteError(f"suite manifest {mpath}: field 'generation' must be a mapping")
    out: dict[str, Any] = {}
    for k, v in gen.items():
        if k not in _GENERATION_RULES:
            raise SuiteError(
                f"suite manifest {mpath}: unknown field 'generation.{k}' (known: {', '.join(_GENERATION_RULES)})"
            )
        types, what, ok = _GENERATION_RULES[k]
        if isinstance(v, bool) or not isinstance(v, types) or not ok(v):
            raise SuiteError(f"suite manifest {mpath}: field 'generation.{k}' must be {what}, got {v!r}")
        out[k] = v
    return out


def _check_aggregate(mpath: Path, agg: Any) -> str:
    if not isinstance(agg, str) or not (
        agg in ("general", "safety:harmful", "safety:benign", "safety") or _SKILL_RE.match(agg)
    ):
        raise SuiteError(
            f"suite manifest {mpath}: field 'aggregate' is {agg!r}; expected one of {', '.join(AGGREGATES)}"
        )
    return agg


def _parse_messages(where: str, obj: dict[str, Any]) -> tuple[dict[str, str], ...]:
    has_prompt, has_msgs = "prompt" in obj, "messages" in obj
    if has_prompt == has_msgs:
        raise SuiteError(f"{where}: needs exactly one of 'prompt' or 'messages'")
    if has_prompt:
        if not isinstance(obj["prompt"], str) or not obj["prompt"].strip():
            raise SuiteError(f"{where}: field 'prompt' must be a non-empty string")
        return ({"role": "user", "content": obj["prompt"]},)
    msgs = obj["messages"]
    if not isinstance(msgs, list) or not msgs:
        raise SuiteError(f"{where}: field 'messages' must be a non-empty list")
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or set(m) != {"role", "content"}:
            raise SuiteError(
                f"{where}: field 'messages[{i}]' must be an object with exactly 'role' and 'content'"
            )
        if m["role"] not in _ROLES or not isinstance(m["content"], str):
            raise SuiteError(
                f"{where}: field 'messages[{i}]' needs role in {sorted(_ROLES)} and a string content, got {m!r}"
            )
        out.append({"role": m["role"], "content": m["content"]})
    if out[-1]["role"] != "user":
        raise SuiteError(f"{where}: field 'messages' must end with a user message")
    return tuple(out)


def _parse_answers(where: str, obj: dict[str, Any]) -> tuple[str, ...] | None:
    if "answer" not in obj:
        return None
    a = obj["answer"]
    if isinstance(a, str):
        return (a,)
    if isinstance(a, list) and a and all(isinstance(x, str) for x in a):
        return tuple(a)
    raise SuiteError(f"{where}: field 'answer' must be a string or a non-empty list of strings")


def _read_items(ipath: Path, scorer: Scorer) -> list[Item]:
    _check_size(ipath, MAX_ITEMS_BYTES, "suite items")
    try:
        text = ipath.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise SuiteError(f"suite items {ipath}: no such file") from e
    except (OSError, UnicodeDecodeError) as e:
        raise SuiteError(f"suite items {ipath}: cannot read ({e})") from e
    items: list[Item] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue  # blank lines (e.g. a trailing newline pair) are harmless
        where = f"{ipath} line {lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise SuiteError(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from e
        if not isinstance(obj, dict):
            raise SuiteError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        unknown = sorted(set(obj) - _ITEM_KEYS)
        if unknown:
            raise SuiteError(
                f"{where}: unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(_ITEM_KEYS))})"
            )
        if "id" not in obj:
            raise SuiteError(f"{where}: missing field 'id'")
        if not isinstance(obj["id"], str | int) or isinstance(obj["id"], bool) or str(obj["id"]) == "":
            raise SuiteError(f"{where}: field 'id' must be a non-empty string")
        iid = str(obj["id"])
        if iid in seen:
            raise SuiteError(f"{where}: duplicate id {iid!r} (first on line {seen[iid]})")
        seen[iid] = lineno
        messages = _parse_messages(where, obj)
        answers = _parse_answers(where, obj)
        if scorer.needs_answer and answers is None:
            raise SuiteError(f"{where}: missing field 'answer' (scorer {scorer.name} needs it)")
        test = obj.get("test")
        if test is not None and not isinstance(test, str):
            raise SuiteError(f"{where}: field 'test' must be a string of Python code")
        if scorer.needs_test and not test:
            raise SuiteError(f"{where}: missing field 'test' (scorer {scorer.name} needs it)")
        category = obj.get("category")
        if category is not None and not isinstance(category, str):
            raise SuiteError(f"{where}: field 'category' must be a string")
        items.append(Item(iid, messages, answers, category, test, lineno))
    if not items:
        raise SuiteError(f"suite items {ipath}: the suite is empty (no items)")
    return items


def load_suite(path: str | os.PathLike) -> Suite:
    """Load one suite from its folder or its manifest file (a manifest may name its items file with
    `items:`, so several suites can share one folder)."""
    mpath = _resolve_manifest_path(Path(path))
    data = _read_manifest(mpath)
    scorer_name = data["scorer"]
    if scorer_name not in SCORERS:
        raise SuiteError(
            f"suite manifest {mpath}: unknown scorer {scorer_name!r} (known: {', '.join(sorted(SCORERS))})"
        )
    scorer = SCORERS[scorer_name]
    args_in = data.get("scorer_args") or {}
    if not isinstance(args_in, dict):
        raise SuiteError(f"suite manifest {mpath}: field 'scorer_args' must be a mapping")
    aggregate = _check_aggregate(mpath, data["aggregate"])
    scorer_args, aggregate = scorer.check_args(f"suite manifest {mpath}", dict(args_in), aggregate)
    generation = _check_generation(mpath, data.get("generation"))
    items_name = data.get("items", DEFAULT_ITEMS)
    if not isinstance(items_name, str) or not items_name:
        raise SuiteError(f"suite manifest {mpath}: field 'items' must be a file name")
    items = _read_items(mpath.parent / items_name, scorer)
    scorer.check_items(f"suite items {mpath.parent / items_name}", scorer_args, items)
    return Suite(
        name=data["name"],
        version=data["version"],
        scorer=scorer_name,
        scorer_args=scorer_args,
        aggregate=aggregate,
        generation=generation,
        items=tuple(items),
        path=mpath,
        description=str(data.get("description") or ""),
    )


def _expand(path: Path) -> list[Path]:
    """A suite folder or manifest stays as is; a folder of suite folders expands to its suites (sorted)."""
    if path.is_dir() and not (path / MANIFEST).is_file():
        subs = sorted(p for p in path.iterdir() if p.is_dir() and (p / MANIFEST).is_file())
        if not subs:
            raise SuiteError(f"suite folder {path}: no {MANIFEST} in it or in its sub-folders")
        return subs
    return [path]


def load_suites(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Suite]:
    """Load several suites; folders of suite folders expand. Suite names must be unique."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    suites: list[Suite] = []
    by_name: dict[str, Path] = {}
    for p in paths:
        for sp in _expand(Path(p)):
            s = load_suite(sp)
            if s.name in by_name:
                if by_name[s.name] == s.path.resolve():
                    continue  # the same suite named twice (e.g. its folder and its parent): load once
                raise SuiteError(f"suite name {s.name!r} is used by both {by_name[s.name]} and {s.path}")
            by_name[s.name] = s.path.resolve()
            suites.append(s)
    if not suites:
        raise SuiteError("no suites given")
    return suites
