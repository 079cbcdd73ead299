"""The built-in suites, selectable by name (`--evals xstest,gsm8k-mini`, `mergescope score xstest`, the
dashboard's suite list). Each name is a folder under assets/suites/ written by evals.convert from the public
data; a name may stand for a folder of suites (xstest: its safe and unsafe halves, which the suites' own
`aggregate:` fields put on the tradeoff plot's benign-compliance and harmful-refusal axes)."""

from __future__ import annotations

import os
from pathlib import Path

from evals.errors import SuiteError

SUITES_DIR = Path(__file__).resolve().parents[1] / "assets" / "suites"

# name -> (folder under SUITES_DIR, one-line description)
BUILTIN_SUITES: dict[str, tuple[str, str]] = {
    "xstest": (
        "xstest",
        "XSTest v2: 250 safe prompts (compliance = over-refusal axis) + 200 unsafe (refusal)",
    ),
    "xstest-safe": ("xstest/safe", "XSTest's 250 safe prompts; score = compliance rate"),
    "xstest-unsafe": ("xstest/unsafe", "XSTest's 200 unsafe contrast prompts; score = refusal rate"),
    "gsm8k": ("gsm8k", "GSM8K test split, 1,319 grade-school maths problems; exact numeric answer"),
    "gsm8k-mini": ("gsm8k-mini", "200 evenly spaced GSM8K test items (ids 0, 6, 13, ...) for quick sweeps"),
    "gsm8k-cot": ("gsm8k-cot", "gsm8k with a 3-shot worked-solution (chain-of-thought) preamble"),
    "gsm8k-mini-cot": (
        "gsm8k-mini-cot",
        "gsm8k-mini with a 3-shot worked-solution (chain-of-thought) preamble",
    ),
    "humaneval": ("humaneval", "HumanEval: 164 Python functions to complete; pass@1 in the code sandbox"),
}


def builtin_path(name: str) -> Path:
    """The folder of a built-in suite; SuiteError naming the known ones if `name` is not one."""
    if name not in BUILTIN_SUITES:
        raise SuiteError(f"no built-in suite {name!r} (built-in: {', '.join(BUILTIN_SUITES)})")
    path = SUITES_DIR / BUILTIN_SUITES[name][0]
    if not path.is_dir():
        raise SuiteError(
            f"built-in suite {name!r}: its folder {path} is missing (re-run python -m evals.convert)"
        )
    return path


def list_builtin() -> list[tuple[str, str, str]]:
    """(name, absolute folder, description) of every built-in suite whose folder is present, for suite
    pickers such as the dashboard's."""
    return [
        (name, str(SUITES_DIR / folder), desc)
        for name, (folder, desc) in BUILTIN_SUITES.items()
        if (SUITES_DIR / folder).is_dir()
    ]


def resolve_suite_ref(ref: str | os.PathLike) -> Path:
    """A suite reference as a path: an existing file or folder stays as it is; else a built-in name."""
    path = Path(ref)
    if path.exists() or str(ref) not in BUILTIN_SUITES:
        return path
    return builtin_path(str(ref))


def split_suite_refs(refs: list[str | os.PathLike]) -> list[str]:
    """Suite references from the command line: each may be a comma list (`xstest,gsm8k-mini`), except an
    existing path, which stays whole even if its name has a comma. The options of an lm-eval entry stay on it:
    `xstest,lm-eval:arc_easy@fewshot=5,limit=50` is two entries."""
    from evals.lm_eval_suite import join_option_parts

    out: list[str] = []
    for ref in refs:
        if Path(ref).exists():
            out.append(str(ref))
        else:
            out += join_option_parts([part.strip() for part in str(ref).split(",") if part.strip()])
    return out
