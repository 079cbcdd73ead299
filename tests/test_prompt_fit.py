"""Prompts against the model's context before a sweep generates: replies cut to fit, prompts too long counted as
failed and recorded, the same on both backends; checked with the real demo family (128-token context) and the
built-in GSM8K suites."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from engine.prompt_fit import MAX_CONTEXT, SuiteFit, context_limit, fit_max_tokens


def test_fit_max_tokens_clamps_and_refuses():
    # limit 10: 3 tokens leave 7 (asked 5: kept), 8 leave 2, 9 leave 1, 10 and 12 leave none.
    assert fit_max_tokens([3, 8, 9, 10, 12], 5, 10) == [5, 2, 1, None, None]


def test_context_limit_reads_positions_and_caps(tmp_path):
    def limit(config) -> int:
        (tmp_path / "config.json").write_text(json.dumps(config))
        return context_limit(tmp_path)

    assert limit({"max_position_embeddings": 128}) == 128
    assert limit({"n_positions": 64}) == 64  # GPT-2
    assert limit({"max_position_embeddings": 131072}) == MAX_CONTEXT  # capped as vLLM's max_model_len
    assert limit({"hidden_size": 8}) == MAX_CONTEXT
    assert context_limit(tmp_path / "missing") == MAX_CONTEXT


def test_suite_fit_summary_names_counts_and_lengths():
    fit = SuiteFit("s", 10, 5, (3, 8, 12), (5, 2, None))
    assert fit.too_long == [2] and fit.clamped == [1] and fit.affected
    line = fit.summary()
    assert "1 of 3 prompts are too long for the model's 10-token context (longest 12 tokens)" in line
    assert "count as failed" in line and "1 of 3 replies are cut to fit (max_tokens 5 -> 2..2)" in line
    assert fit.record() == {
        "context_limit": 10, "max_tokens": 5, "too_long": 1, "clamped": 1, "longest_prompt": 12, "min_budget": 2,
    }  # fmt: skip
    assert "NO prompt fits" in SuiteFit("s", 10, 5, (12,), (None,)).summary()
    assert SuiteFit("s", 10, 5, (3,), (5,)).summary() == ""


def test_count_too_long_fails_the_items_whatever_they_scored():
    from evals.aggregate import TOO_LONG, SuiteResult, count_too_long
    from evals.stats import Score

    result = SuiteResult(
        "s", "s@1:x", "safety:benign", Score.from_counts(3, 3), [True, True, True], ["a", "b", "c"],
        ["", "ok", ""], "refusal", outcomes=["complied", "complied", "complied"],
    )  # fmt: skip
    marked = count_too_long(result, [0, 2], {"context_limit": 10})
    assert marked.per_item == [False, True, False] and marked.score.value == pytest.approx(1 / 3)
    assert marked.outcomes == [TOO_LONG, "complied", TOO_LONG] and marked.too_long_ids == ["a", "c"]
    again = SuiteResult.from_dict(marked.to_dict())
    assert again.context == {"context_limit": 10} and again.too_long_ids == ["a", "c"]
    assert "context" not in result.to_dict()  # results that fitted keep their stored shape


# --- the demo family (128-token context) with the built-in GSM8K and XSTest suites --------------------------------
@pytest.fixture(scope="module")
def demo_fits(demo_family):
    from engine.backends import GenerationSettings
    from engine.sweep import suite_fits
    from evals import load_suites

    return suite_fits(
        load_suites(["gsm8k-mini-cot", "gsm8k-mini", "xstest"]), demo_family.general, GenerationSettings()
    )


def test_demo_family_fits_of_the_builtin_suites(demo_fits):
    cot, mini = demo_fits["gsm8k-mini-cot"], demo_fits["gsm8k-mini"]
    assert (
        cot.limit == 128 and len(cot.too_long) == 200 and cot.longest > 300
    )  # 3-shot preamble: nothing fits
    assert 0 < len(mini.too_long) < 20 and mini.longest > 128
    assert len(mini.clamped) == 200 - len(mini.too_long)  # max_tokens 512: every reply that can start is cut
    for lengths, budgets in ((mini.lengths, mini.budgets), (demo_fits["xstest-safe"].lengths, demo_fits["xstest-safe"].budgets)):  # fmt: skip
        assert all(b is None or n + b == 128 for n, b in zip(lengths, budgets, strict=True))
    assert not demo_fits["xstest-unsafe"].too_long and demo_fits["xstest-unsafe"].clamped


def edge_suite(folder: Path, fit: SuiteFit, n: int = 3) -> Path:
    """A suite of gsm8k-mini items at the edges of the demo context: too long, barely fitting (a budget of a few
    tokens), and short."""
    from evals.builtin import builtin_path

    items = [
        json.loads(line) for line in (builtin_path("gsm8k-mini") / "items.jsonl").read_text().splitlines()
    ]
    order = sorted(range(len(items)), key=lambda i: fit.lengths[i])
    barely = [i for i in order if fit.budgets[i] is not None and fit.budgets[i] <= 8]
    picked = order[:n] + barely[-n:] + fit.too_long[:n]
    folder.mkdir(parents=True)
    (folder / "items.jsonl").write_text("".join(json.dumps(items[i]) + "\n" for i in picked))
    manifest = {"name": "gsm8k-edge", "version": 1, "scorer": "number", "aggregate": "general",
                "generation": {"max_tokens": 512, "temperature": 0.0}}  # fmt: skip
    (folder / "suite.yaml").write_text(yaml.safe_dump(manifest))
    return folder


def sweep_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / "mergescope"
    argv = [str(script), "sweep", "--weights", "0.5", "--no-standard-references", "--no-heuristic-point",
            "--store", str(tmp_path / "store.db"), *args]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path)


def test_demo_sweep_with_too_long_suites_runs_says_so_and_records_it(tmp_path, demo_family, demo_fits):
    """`mergescope sweep` on the demo family with gsm8k-mini-cot (no prompt fits its 128 tokens) and a suite at the
    edges of the context: the sweep runs, warns before and after, counts the too-long items as failed (recorded
    in the results) and cuts every other reply to fit."""
    edge = edge_suite(tmp_path / "edge", demo_fits["gsm8k-mini"])
    out = tmp_path / "sweep.json"
    args = ("--evals", f"gsm8k-mini-cot,{edge}", "--backend", "transformers", "--json", str(out))
    proc = sweep_cli(tmp_path, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: context:")]
    assert len(warnings) == 4  # each affected suite, before the sweep and again under the table
    assert "gsm8k-mini-cot: 200 of 200 prompts are too long for the model's 128-token context" in warnings[0]
    assert "NO prompt fits" in warnings[0]
    assert (
        "gsm8k-edge: 3 of 9 prompts are too long" in warnings[1] and "6 of 9 replies are cut" in warnings[1]
    )
    (point,) = [p for p in json.loads(out.read_text())["points"] if p["kind"] == "variant"]
    cot = point["suites"]["gsm8k-mini-cot"]["payload"]
    assert cot["score"]["n"] == 200 and cot["score"]["value"] == 0 and len(cot["too_long_ids"]) == 200
    assert cot["context"]["context_limit"] == 128 and cot["context"]["too_long"] == 200
    edge_result = point["suites"]["gsm8k-edge"]["payload"]
    assert edge_result["score"]["n"] == 9 and len(edge_result["too_long_ids"]) == 3
    assert point["scores"]["context"]["gsm8k-edge"]["too_long"] == 3
    from engine.prompt_fit import load_tokenizer, prompt_lengths
    from evals import load_suite

    tokenizer = load_tokenizer(demo_family.general)
    lengths = prompt_lengths(tokenizer, load_suite(edge).prompts())
    for n, reply, item in zip(lengths, edge_result["replies"], edge_result["item_ids"], strict=True):
        if item in edge_result["too_long_ids"]:
            assert n >= 128 and reply == ""
        else:  # the reply fits in what the prompt left of the context
            assert n + len(tokenizer(reply, add_special_tokens=False)["input_ids"]) <= 128
    again = sweep_cli(tmp_path, *args)  # same limit, same key: every result comes from the store
    assert again.returncode == 0 and "stored" in again.stderr, again.stderr[-2000:]


@pytest.mark.vllm
def test_vllm_and_transformers_cut_and_fail_the_same_items(vllm_backend, demo_family, demo_fits, tmp_path):
    """The edge suite swept on both backends gives the same replies and the same failed items."""
    from engine.backends.hf_backend import TransformersBackend
    from engine.store import ResultStore
    from engine.sweep import SweepSpec, prepare_sweep, run_sweep

    edge = edge_suite(tmp_path / "edge", demo_fits["gsm8k-mini"])
    spec = SweepSpec(
        base=str(demo_family.base), general=str(demo_family.general),
        skills={"safety": str(demo_family.skills["safety"])}, weights=[0.5], suites=[str(edge)],
        standard_references=False, heuristic_point=False,
    )  # fmt: skip
    results = {}
    hf = TransformersBackend(demo_family.general, dtype=vllm_backend.dtype)
    try:
        for name, backend in (("vllm", vllm_backend), ("transformers", hf)):
            with ResultStore(tmp_path / f"{name}.db") as store:
                (point,) = list(run_sweep(prepare_sweep(spec), backend, store))
            results[name] = point.suite_results[0]
    finally:
        hf.close()
    a, b = results["vllm"], results["transformers"]
    assert a.too_long_ids == b.too_long_ids and len(a.too_long_ids) == 3
    assert [r.strip() for r in a.replies] == [r.strip() for r in b.replies]
    assert a.per_item == b.per_item


def test_transformers_rows_stop_where_the_context_ends(demo_family):
    """One batch of short and long prompts asking for more tokens than the 128-token context holds: each reply
    stops where its own prompt leaves the context (as vLLM's), and is what that prompt alone gives."""
    from engine.backends import GenerationSettings
    from engine.backends.hf_backend import TransformersBackend
    from engine.prompt_fit import load_tokenizer, prompt_lengths

    words = "red blue green pink " * 25
    prompts = [[{"role": "user", "content": text}] for text in ("count 1 2 3", f"repeat: {words}", "hello")]
    settings = GenerationSettings(max_tokens=500)
    backend = TransformersBackend(demo_family.general)
    try:
        together = backend.generate(None, prompts, settings)
        alone = [backend.generate(None, [p], settings)[0] for p in prompts]
    finally:
        backend.close()
    assert together == alone
    tokenizer = load_tokenizer(demo_family.general)
    lengths = prompt_lengths(tokenizer, prompts)
    assert 60 < lengths[1] < 128  # the long prompt leaves a short budget
    for n, reply in zip(lengths, together, strict=True):
        assert n + len(tokenizer(reply, add_special_tokens=False)["input_ids"]) <= 128
