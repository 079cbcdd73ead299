"""`mergescope score SUITE --replies REPLIES.jsonl [--json OUT.json]`: score replies produced anywhere else, or
re-score a sweep's stored replies with another judge (`--from-store`), without generating anything.

SUITE is a built-in name (xstest, gsm8k, gsm8k-mini, humaneval, ...), a suite folder or a manifest; a comma
list scores several at once (replies then match items across them).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.backends import BACKEND_KINDS
from engine.errors import ConfigError

JUDGES = "rules | phrases | model:CHECKPOINT"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", help="built-in suite name, suite folder or manifest (comma list allowed)")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--replies", type=Path, help='JSON Lines: {"id": ..., "reply": ...} or {"prompt": ..., "reply": ...}'
    )
    src.add_argument(
        "--from-store", type=Path, metavar="STORE", help="re-score the replies a sweep stored here"
    )
    parser.add_argument(
        "--sweep", default=None, help="with --from-store: sweep id or prefix (default: latest)"
    )
    parser.add_argument("--json", type=Path, help="write the metrics and every item's outcome as JSON")
    parser.add_argument(
        "--judge", default=None, help=f"refusal judge for refusal suites: {JUDGES} (default: the suite's own)"
    )
    parser.add_argument(
        "--judge-template", type=Path, help="with --judge model:...: YAML with template/classes"
    )
    parser.add_argument("--backend", choices=BACKEND_KINDS, default="auto", help="engine for a model judge")
    parser.add_argument("--device", default=None, help="engine device for a model judge")


def make_judge(args: argparse.Namespace) -> tuple[Any, Callable[[], None]]:
    """(classifier or None for the suite's own, a function that releases what it started)."""
    spec = args.judge
    if args.judge_template and not (spec or "").startswith("model:"):
        raise ConfigError("--judge-template only applies to --judge model:CHECKPOINT")
    if spec is None:
        return None, lambda: None
    if spec == "rules":
        from evals.judge import RuleRefusalJudge

        return RuleRefusalJudge(), lambda: None
    if spec == "phrases":
        from evals.refusal import default_classifier

        return default_classifier(), lambda: None
    if spec.startswith("model:") and spec != "model:":
        return model_judge(Path(spec.removeprefix("model:")), args.judge_template, args.backend, args.device)
    raise ConfigError(f"--judge {spec!r}: expected {JUDGES}")


def model_judge(
    checkpoint: Path, template_file: Path | None, backend_kind: str = "auto", device: str | None = None
) -> tuple[Any, Callable[[], None]]:
    """A ModelRefusalJudge served by our backend on `checkpoint` (started here; close it when done)."""
    from engine.backends import GenerationSettings, make_backend
    from engine.checkpoint import open_checkpoint
    from evals.model_judge import DEFAULT_TEMPLATE, ModelRefusalJudge, load_template

    opts = load_template(template_file) if template_file else {}
    with open_checkpoint(checkpoint) as ckpt:
        model_id = ckpt.identity()[:16]
    backend = make_backend(checkpoint, backend_kind, device)
    settings = GenerationSettings(max_tokens=16, temperature=0.0)
    judge = ModelRefusalJudge(
        lambda msgs: backend.generate(None, msgs, settings),
        model_id=model_id,
        template=opts.get("template") or DEFAULT_TEMPLATE,
        classes=opts.get("classes"),
    )
    return judge, backend.close


def _stored_points(store_path: Path, sweep: str | None) -> list[dict[str, Any]]:
    from engine.store import ResultStore

    if not store_path.is_file():
        raise ConfigError(f"--from-store {store_path}: no such file")
    with ResultStore(store_path) as store:
        return store.sweep_points(store.resolve_sweep(sweep))


def run(args: argparse.Namespace) -> int:
    from engine.store import atomic_write_text
    from evals import load_suites
    from evals.builtin import split_suite_refs
    from evals.rescore import format_report, read_replies, report, score_given

    suites = load_suites(split_suite_refs([args.suite]))
    if args.sweep and not args.from_store:
        raise ConfigError("--sweep only applies with --from-store")
    judge, release = make_judge(args)
    try:
        if args.replies:
            given = read_replies(args.replies, suites)
            doc = report({s.name: score_given(s, given[s.name], classifier=judge) for s in suites})
            print(format_report(doc))
        else:
            points = []
            for point in _stored_points(args.from_store, args.sweep):
                stored = {
                    s.name: dict(zip(p["payload"]["item_ids"], p["payload"]["replies"], strict=True))
                    for s in suites
                    if (p := point["suites"].get(s.name)) is not None
                }
                if not stored:
                    continue
                doc_p = report(
                    {s.name: score_given(s, stored.get(s.name, {}), classifier=judge) for s in suites}
                )
                print(f"== {point['label']} ({point['kind']})")
                print(format_report(doc_p))
                points.append(
                    {"label": point["label"], "kind": point["kind"], "weights": point["weights"], **doc_p}
                )
            if not points:
                names = ", ".join(s.name for s in suites)
                raise ConfigError(f"--from-store {args.from_store}: the sweep stored no replies for {names}")
            doc = {"points": points}
        if judge is not None:
            doc["judge"] = judge.identity
            if getattr(judge, "unparsed", 0):
                print(f"model judge: {judge.unparsed} verdicts matched no class (classed by the rule judge)")
                doc["judge_unparsed"] = judge.unparsed
        if args.json:
            atomic_write_text(args.json, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    finally:
        release()
    return 0
