"""The lm-evaluation-harness bridge: lm-eval tasks on the swapped engine score a merged variant exactly as lm-eval's
own `hf` model scores that variant exported to disk. Two local tasks ship in tests/data/lm_eval: a multiple-choice
log-likelihood task and a generate_until task over demo-family questions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from engine.errors import BackendError, MergescopeError  # noqa: E402
from evals.errors import SuiteError  # noqa: E402
from evals.lm_eval_suite import load_lm_eval_suite, result_from_samples  # noqa: E402

DATA = Path(__file__).parent / "data" / "lm_eval"
TASKS = ("demo_pick.yaml", "demo_last.yaml")  # multiple_choice (loglikelihood), generate_until


@pytest.fixture(scope="module")
def suites():
    return [load_lm_eval_suite(f"lm-eval:{DATA / name}") for name in TASKS]


@pytest.fixture(scope="module")
def variant(demo_family):
    from engine.config import ptm_config

    return ptm_config(
        str(demo_family.base), str(demo_family.general), {str(demo_family.skills["safety"]): 0.7}
    )


@pytest.fixture(scope="module")
def hf_reference(tmp_path_factory, variant, suites):
    """lm-eval's own `hf` model on the variant exported to a folder: the per-task SuiteResults."""
    from lm_eval.evaluator import evaluate
    from lm_eval.models.huggingface import HFLM

    from engine.export import export_merge

    folder = export_merge(variant, tmp_path_factory.mktemp("lm_eval") / "variant")
    lm = HFLM(pretrained=str(folder), device="cpu", batch_size=8)
    out = {}
    for suite in suites:
        samples = evaluate(lm, suite.task_dict, log_samples=True, bootstrap_iters=0)["samples"]
        out[suite.name] = result_from_samples(suite, samples)
    return out


def _responses(result) -> list:
    return [json.loads(reply)["response"] for reply in result.replies]


def _logprobs(result) -> list[float]:
    """Every choice's log-likelihood of a multiple-choice result, flat."""
    return [lp for choices in _responses(result) for lp, _ in choices]


def _assert_same(ours, theirs, *, logprob_tol: float, rel: float = 0.0) -> None:
    assert ours.item_ids == theirs.item_ids
    assert ours.per_item == theirs.per_item
    assert ours.score.value == theirs.score.value
    for mine, ref in zip(_responses(ours), _responses(theirs), strict=True):
        if isinstance(ref[0], str):  # generate_until: the generated text itself
            assert mine == ref
        else:  # multiple choice: (log-likelihood, is_greedy) per choice
            for (lp, greedy), (ref_lp, ref_greedy) in zip(mine, ref, strict=True):
                assert lp == pytest.approx(ref_lp, abs=logprob_tol, rel=rel)
                assert greedy == ref_greedy


@pytest.mark.vllm
def test_swapped_vllm_engine_matches_lm_eval_hf_on_the_exported_variant(
    vllm_backend, variant, suites, hf_reference
):
    import torch

    from engine.lm_eval_model import evaluate_suite

    # vLLM on this CPU serves in bfloat16 (its first choice), lm-eval's hf model in the checkpoint's float32:
    # the metric, every item's outcome, every greedy flag and every generated text must agree exactly; the
    # log-likelihoods to bfloat16 precision (a few percent).
    half = vllm_backend.llm.llm_engine.model_config.dtype != torch.float32
    swaps = vllm_backend.swaps
    ours = {}
    for suite in suites:
        ours[suite.name] = evaluate_suite(suite, vllm_backend, variant)
        _assert_same(
            ours[suite.name],
            hf_reference[suite.name],
            logprob_tol=0.05 if half else 2e-3,
            rel=0.04 if half else 0.0,
        )
    assert vllm_backend.swaps <= swaps + 1  # the variant went in once (or was already there), no restart
    # The bridge really scored the variant: on the general model the log-likelihoods move by far more than the
    # precision gap above.
    mc = suites[0].name
    general = evaluate_suite(suites[0], vllm_backend, None)
    gap = max(abs(a - b) for a, b in zip(_logprobs(ours[mc]), _logprobs(hf_reference[mc]), strict=True))
    moved = sum(abs(a - b) for a, b in zip(_logprobs(general), _logprobs(hf_reference[mc]), strict=True))
    assert moved / len(_logprobs(general)) > 2 * gap


def test_transformers_backend_matches_lm_eval_hf(demo_family, variant, suites, hf_reference):
    from engine.backends.hf_backend import TransformersBackend
    from engine.lm_eval_model import evaluate_suite

    # float32 like lm-eval's hf model on the float32 export (a bf16-capable CPU would otherwise serve bfloat16).
    with TransformersBackend(demo_family.general, dtype="float32") as backend:
        for suite in suites:
            _assert_same(evaluate_suite(suite, backend, variant), hf_reference[suite.name], logprob_tol=1e-4)
        assert backend.swaps == 1


def test_loglikelihood_rolling_sums_token_logprobs(demo_family):
    """loglikelihood_rolling is the sum of every token's log-probability after the prefix token: the same
    number as one loglikelihood request of (prefix, whole text)."""
    from lm_eval.api.instance import Instance

    from engine.backends.hf_backend import TransformersBackend
    from engine.lm_eval_model import MergescopeLM

    with TransformersBackend(demo_family.general) as backend:
        lm = MergescopeLM(backend)
        text = "<|user|>tell me the last word: pink rake plane.<|end|><|assistant|>plane<|end|>"
        request = Instance("loglikelihood_rolling", {}, (text,), 0)
        (rolling,) = lm.loglikelihood_rolling([request])
        ids = lm.tok_encode(text)
        ((whole, _),) = backend.loglikelihood(None, [([lm.prefix_token_id], ids)])
        assert rolling == pytest.approx(whole, abs=1e-4)
        assert rolling < 0


def test_bad_lm_eval_entries_name_the_problem(tmp_path):
    with pytest.raises(SuiteError, match="no such task file"):
        load_lm_eval_suite(f"lm-eval:{tmp_path / 'missing.yaml'}")
    broken = tmp_path / "broken.yaml"
    broken.write_text((DATA / "demo_pick.yaml").read_text().replace("demo_pick.jsonl", "absent.jsonl"))
    with pytest.raises(SuiteError, match=r"broken\.yaml.*could not load"):
        load_lm_eval_suite(f"lm-eval:{broken}")
    with pytest.raises(SuiteError, match="expected lm-eval:TASK"):
        load_lm_eval_suite("lm-eval:")
    assert issubclass(SuiteError, MergescopeError) and issubclass(BackendError, MergescopeError)


def test_suite_key_follows_the_data(tmp_path):
    """Editing a local task's data changes its store key; the same files give the same key."""
    for name in ("demo_pick.yaml", "demo_pick.jsonl"):
        (tmp_path / name).write_text((DATA / name).read_text())
    first = load_lm_eval_suite(f"lm-eval:{tmp_path / 'demo_pick.yaml'}").key()
    assert load_lm_eval_suite(f"lm-eval:{tmp_path / 'demo_pick.yaml'}").key() == first
    data = tmp_path / "demo_pick.jsonl"
    data.write_text(data.read_text().replace('"label": 2', '"label": 1', 1))
    assert load_lm_eval_suite(f"lm-eval:{tmp_path / 'demo_pick.yaml'}").key() != first


@pytest.mark.vllm
def test_sweep_runs_lm_eval_tasks_and_a_composite_on_every_point(tmp_path, demo_family, vllm_backend):
    """lm-eval suites beside a built-in suite in one sweep on the shared engine: every point gets each task's
    score and the composite (their mean); the store holds every item; a re-run is served from the store."""
    from engine.store import ResultStore
    from engine.sweep import SweepSpec, prepare_sweep, run_sweep

    pick = f"lm-eval:{DATA / 'demo_pick.yaml'}"
    spec = SweepSpec(
        base=str(demo_family.base),
        general=str(demo_family.general),
        skills={"safety": str(demo_family.skills["safety"])},
        weights=[0.0, 1.0],
        suites=[pick, str(demo_family.root / "evals" / "demo-math")],
        standard_references=False,
        heuristic_point=False,
        composites={"avg": [pick, "demo-math"]},
    )
    prepared = prepare_sweep(spec)
    assert spec.composites == {"avg": ["lm-eval:mergescope_demo_pick", "demo-math"]}  # entry -> suite name
    with ResultStore(tmp_path / "store.db") as store:
        results = list(run_sweep(prepared, vllm_backend, store))
        assert [r.label for r in results] == ["ω=0", "ω=1"]
        for r in results:
            row = r.aggregates()
            task = row["lm-eval:mergescope_demo_pick"]
            math_score = r.scores.suites["demo-math"]
            assert row["composite:avg"]["value"] == pytest.approx((task["value"] + math_score.value) / 2)
            assert row["composite:avg"]["lo"] < row["composite:avg"]["value"] < row["composite:avg"]["hi"]
            lm = next(s for s in r.suite_results if s.suite == "lm-eval:mergescope_demo_pick")
            assert len(lm.per_item) == len(lm.item_ids) == 24
        # Skill weight 1 moves the model: the task's per-item log-likelihoods differ between the two points.
        first, last = ([s for s in r.suite_results if s.suite.startswith("lm-eval:")][0] for r in results)
        assert first.replies != last.replies
        stored = store.sweep_points(store.begin_sweep(prepared.store_spec()))
        assert [p["scores"]["aggregates"]["composite:avg"] for p in stored] == [
            r.aggregates()["composite:avg"] for r in results
        ]
        swaps = vllm_backend.swaps
        again = list(run_sweep(prepare_sweep(spec), vllm_backend, store))
    assert all(r.cached for r in again) and vllm_backend.swaps == swaps
    assert [r.aggregates() for r in again] == [r.aggregates() for r in results]


# --- task options: lm-eval:TASK@fewshot=N,limit=N ----------------------------------------------------------------
def test_task_options_parse_and_stay_whole_in_comma_lists():
    from evals.builtin import split_suite_refs
    from evals.composite import parse_composite
    from evals.lm_eval_suite import split_options

    assert split_options("lm-eval:arc_easy@fewshot=5,limit=50") == ("arc_easy", {"fewshot": 5, "limit": 50})
    assert split_options("lm-eval:arc_easy@num_fewshot=0,limit=0.1") == (
        "arc_easy",
        {"fewshot": 0, "limit": 0.1},
    )
    assert split_options("lm-eval:/data/me@lab/task.yaml") == ("/data/me@lab/task.yaml", {})  # '@' in a path
    entry = "lm-eval:arc_easy@fewshot=5,limit=50"
    assert split_suite_refs([f"xstest,{entry},gsm8k-mini"]) == ["xstest", entry, "gsm8k-mini"]
    assert parse_composite(f"avg=demo-general,{entry}") == ("avg", ["demo-general", entry])
    for bad, needle in (
        ("@shots=5", "unknown task option 'shots'"),
        ("@fewshot=-1", "fewshot='-1' must be a whole number"),
        ("@fewshot=2.5", "whole number"),
        ("@limit=0", "limit='0' must be"),
        ("@limit=2.5", "limit='2.5' must be"),
        ("@limit=5,limit=6", "given twice"),
    ):
        with pytest.raises(SuiteError, match=needle):
            split_options(f"lm-eval:arc_easy{bad}")


def test_task_options_name_key_and_items(tmp_path):
    pick = f"lm-eval:{DATA / 'demo_pick.yaml'}"
    plain, limited, shots = (load_lm_eval_suite(pick + o) for o in ("", "@limit=5", "@fewshot=2,limit=5"))
    assert (plain.name, limited.name) == (
        "lm-eval:mergescope_demo_pick",
        "lm-eval:mergescope_demo_pick@limit=5",
    )
    assert shots.name == "lm-eval:mergescope_demo_pick@fewshot=2,limit=5"
    assert len({plain.key(), limited.key(), shots.key()}) == 3  # other options, other results
    assert len(plain) == 24 and len(limited) == len(limited.items) == 5
    assert len(load_lm_eval_suite(pick + "@limit=0.25")) == 6  # a fraction of the documents, rounded up
    assert load_lm_eval_suite(pick + "@fewshot=2,limit=5").key() == shots.key()
    fixed = tmp_path / "zero.yaml"
    fixed.write_text(
        (DATA / "demo_pick.yaml").read_text().replace("demo_pick.jsonl", str(DATA / "demo_pick.jsonl"))
        + "num_fewshot: 0\n"
    )
    with pytest.raises(SuiteError, match="fixes num_fewshot: 0"):
        load_lm_eval_suite(f"lm-eval:{fixed}@fewshot=2")


def test_task_options_score_as_lm_eval_own_num_fewshot_and_limit(demo_family):
    """`@fewshot=2,limit=5` through our backend gives, item by item, what lm-eval's simple_evaluate gives the `hf`
    model with --num_fewshot 2 --limit 5 (its default few-shot seed); the same examples at every evaluation."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._yaml_loader import load_yaml

    from engine.backends.hf_backend import TransformersBackend
    from engine.lm_eval_model import evaluate_suite
    from evals.lm_eval_suite import _resolve_data_files

    suite = load_lm_eval_suite(f"lm-eval:{DATA / 'demo_pick.yaml'}@fewshot=2,limit=5")
    config = load_yaml(DATA / "demo_pick.yaml")
    _resolve_data_files(config, DATA)
    out = lm_eval.simple_evaluate(
        model=HFLM(pretrained=str(demo_family.general), device="cpu", batch_size=8),
        tasks=[config],
        num_fewshot=2,
        limit=5,
        log_samples=True,
        bootstrap_iters=0,
        task_manager=TaskManager(include_defaults=False),
    )
    theirs = result_from_samples(suite, out["samples"])
    with TransformersBackend(demo_family.general, dtype="float32") as backend:  # as HFLM loads it
        ours = evaluate_suite(suite, backend, None)
        again = evaluate_suite(suite, backend, None)
        zero_shot = evaluate_suite(
            load_lm_eval_suite(f"lm-eval:{DATA / 'demo_pick.yaml'}@limit=5"), backend, None
        )
    _assert_same(ours, theirs, logprob_tol=1e-4)
    assert again.replies == ours.replies
    assert _logprobs(zero_shot) != pytest.approx(_logprobs(ours), abs=1e-3)  # the shots changed the contexts
