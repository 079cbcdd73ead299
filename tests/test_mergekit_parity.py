"""Parity with mergekit 0.1.5: the same YAML through `mergekit` and `mergescope merge` gives the same tensors.

One synthetic Llama family (base sharded with an index, fine-tunes single-file, 3 layers so gradients have a
middle), one mergekit process for every config (its import costs seconds), then every tensor compared in float32:
max |ours - theirs| / max |theirs| <= 1e-5 per tensor. DARE/DELLA are random: with the same seed (`mergescope merge
--seed N`, mergekit's `random_seed: N`) they draw mergekit's very masks, so whole tensors come out bit-identical in
every dtype; their kept fraction, magnitude preference and L1-norm rescale are checked statistically too.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("mergekit")

import engine.merge as merge_module  # noqa: E402
from engine.checkpoint import open_checkpoint  # noqa: E402
from engine.cli import main as cli_main  # noqa: E402
from engine.config import load_config  # noqa: E402
from engine.synthetic import llama_config, write_family  # noqa: E402
from tests.mergekit_oracle import SEED  # noqa: E402

DETERMINISTIC = {
    "linear": """
merge_method: linear
models:
  - {model: A, parameters: {weight: 0.3}}
  - {model: B, parameters: {weight: [0.2, 0.8]}}
  - model: C
    parameters:
      weight: [{filter: mlp, value: 1.0}, {value: 0.5}]
""",
    "linear_unnormalized": """
merge_method: linear
models:
  - {model: A, parameters: {weight: 0.3}}
  - {model: B, parameters: {weight: -0.6}}
parameters: {normalize: false}
""",
    "task_arithmetic": """
merge_method: task_arithmetic
base_model: BASE
models:
  - {model: A, parameters: {weight: 0.7}}
  - model: B
    parameters:
      weight: [{filter: self_attn, value: [1.0, -0.5, 0.25]}, {value: -0.3}]
parameters: {lambda: 0.8}
""",
    "task_arithmetic_normalized": """
merge_method: task_arithmetic
base_model: BASE
models:
  - {model: BASE}
  - {model: A, parameters: {weight: 0.7}}
  - {model: B, parameters: {weight: 0.2}}
  - {model: C, parameters: {weight: 0.4}}
parameters: {normalize: true}
""",
    "ties": """
merge_method: ties
base_model: BASE
models:
  - {model: A, parameters: {weight: 0.7, density: [0.3, 0.9]}}
  - model: B
    parameters:
      weight: [{filter: mlp, value: 0.2}, {value: -0.5}]
      density: 0.5
  - {model: C, parameters: {weight: 0.4, density: 0.2}}
parameters: {normalize: true, lambda: 1.3, int8_mask: true}
""",
    "ties_unnormalized": """
merge_method: ties
base_model: BASE
models:
  - {model: A, parameters: {weight: 0.5}}
  - {model: B, parameters: {weight: 0.5}}
parameters: {density: 0.4, normalize: false}
""",
    "breadcrumbs": """
merge_method: breadcrumbs
base_model: BASE
models:
  - {model: A, parameters: {weight: 0.6, density: 0.7, gamma: 0.05}}
  - {model: B, parameters: {weight: 0.4, density: 0.5}}
""",
    "breadcrumbs_rescaled": """
merge_method: breadcrumbs
base_model: BASE
models:
  - {model: A, parameters: {weight: 1.0, density: 0.6, gamma: 0.1}}
parameters: {rescale: true}
""",
    "breadcrumbs_ties": """
merge_method: breadcrumbs_ties
base_model: BASE
models:
  - {model: A, parameters: {weight: 0.6}}
  - {model: B, parameters: {weight: 0.5}}
  - {model: C, parameters: {weight: 0.3}}
parameters: {density: 0.5, gamma: [0.01, 0.1], normalize: true}
""",
    "slerp": """
merge_method: slerp
base_model: BASE
models:
  - {model: A}
parameters:
  t:
    - {filter: self_attn, value: [0, 0.5, 1]}
    - {filter: mlp, value: [1, 0.3, 0]}
    - {value: 0.6}
""",
    "model_stock": """
merge_method: model_stock
base_model: BASE
models: [{model: A}, {model: B}, {model: C}]
""",
    "model_stock_filter_wise": """
merge_method: model_stock
base_model: BASE
models: [{model: A}, {model: B}]
parameters: {filter_wise: true}
""",
    "arcee_fusion": """
merge_method: arcee_fusion
base_model: BASE
models: [{model: BASE}, {model: A}]
""",
    "nuslerp": """
merge_method: nuslerp
base_model: BASE
models:
  - {model: A, parameters: {weight: 0.3}}
  - {model: B, parameters: {weight: [0.5, 0.9]}}
""",
    "nuslerp_row_wise": """
merge_method: nuslerp
models:
  - {model: A, parameters: {weight: 0.6}}
  - {model: B, parameters: {weight: 0.4}}
parameters: {nuslerp_flatten: false, nuslerp_row_wise: true}
""",
    "nuslerp_rows": """
merge_method: nuslerp
base_model: BASE
models:
  - {model: A, parameters: {weight: 1.0}}
  - {model: B, parameters: {weight: 3.0}}
parameters: {nuslerp_flatten: false}
""",
    "karcher": """
merge_method: karcher
models: [{model: A}, {model: B}, {model: C}]
parameters: {max_iter: 20}
""",
    "karcher_with_base": """
merge_method: karcher
base_model: BASE
models: [{model: A}, {model: B}]
""",
    "multislerp": """
merge_method: multislerp
base_model: BASE
models:
  - {model: A, parameters: {weight: 0.5}}
  - {model: B, parameters: {weight: 0.3}}
  - {model: C, parameters: {weight: [0.1, 0.6]}}
""",
    "multislerp_unnormalized": """
merge_method: multislerp
models:
  - {model: A, parameters: {weight: 0.7}}
  - {model: B, parameters: {weight: 0.6}}
parameters: {normalize_weights: false}
""",
    "nearswap": """
merge_method: nearswap
base_model: BASE
models: [{model: A}]
parameters: {t: [0.005, 0.03]}
""",
    "ram": """
merge_method: ram
base_model: BASE
models: [{model: A}, {model: B}, {model: C}]
parameters: {epsilon: 0.02}
""",
    "ramplus_tl": """
merge_method: ramplus_tl
base_model: BASE
models: [{model: A}, {model: B}, {model: C}]
parameters: {epsilon: 0.015, r: 0.5, alpha: 0.9}
""",
    "sce": """
merge_method: sce
base_model: BASE
models: [{model: A}, {model: B}, {model: C}]
parameters: {select_topk: 0.4}
""",
    "sce_all": """
merge_method: sce
base_model: BASE
models: [{model: A}, {model: B}]
""",
}

# The same configs again with tiny row chunks: the streamed forms (elementwise chunks, chunked top-k and band
# selection, two-pass slerp and Model Stock, the statistics passes of the spherical and selecting methods) must
# give mergekit's tensors too.
STREAMED = (
    "task_arithmetic", "ties", "linear", "breadcrumbs", "breadcrumbs_rescaled", "slerp", "model_stock",
    "model_stock_filter_wise", "arcee_fusion", "nuslerp", "nuslerp_row_wise", "nuslerp_rows", "karcher",
    "karcher_with_base", "multislerp", "nearswap", "ram", "ramplus_tl", "sce",
)  # fmt: skip
DETERMINISTIC.update({f"{name}_streamed": DETERMINISTIC[name] for name in STREAMED})

# Half precision: mergekit computes in the config's dtype and so do we by default. One config per method in one
# of the two half dtypes by default, every deterministic config in both under the `slow` marker.
HALF_DTYPES = ("float16", "bfloat16")
METHOD_CASES = sorted(name for name in DETERMINISTIC if not name.endswith("_streamed"))
ONE_PER_METHOD = {}
for name in METHOD_CASES:
    ONE_PER_METHOD.setdefault(DETERMINISTIC[name].split("merge_method: ")[1].split()[0], name)
HALF_DEFAULT = {
    f"{case}_{HALF_DTYPES[i % 2]}": DETERMINISTIC[case] + f"dtype: {HALF_DTYPES[i % 2]}\n"
    for i, case in enumerate(sorted(ONE_PER_METHOD.values()))
}
HALF_SLOW = {
    f"{case}_{dtype}": DETERMINISTIC[case] + f"dtype: {dtype}\n"
    for case in METHOD_CASES
    for dtype in HALF_DTYPES
    if f"{case}_{dtype}" not in HALF_DEFAULT
}
# The long tail: the streamed forms of most methods added for mergekit 0.1.5 (tests/test_methods.py checks each
# streamed form against its whole-tensor form) and second configs of those methods.
SLOW_CASES = (
    "nuslerp_streamed", "nuslerp_row_wise_streamed", "nuslerp_rows_streamed", "karcher_with_base_streamed",
    "multislerp_streamed", "nearswap_streamed", "ram_streamed", "ramplus_tl_streamed", "arcee_fusion_streamed",
    "multislerp_unnormalized", "sce_all", "nuslerp_rows", "karcher_with_base",
)  # fmt: skip
SLOW = {n: DETERMINISTIC.pop(n) for n in SLOW_CASES}
SLOW.update(HALF_SLOW)
DETERMINISTIC.update(HALF_DEFAULT)
# As model cards write them: mergekit's `modules: {default: ...}` form, and keys mergekit's config models drop
# (a top-level out_path, a per-model revision, a parameter no method reads). Both tools merge it (we warn).
DETERMINISTIC["ties_modules_default_with_strays"] = """
merge_method: ties
base_model: BASE
out_path: ./merged
dtype: bfloat16
modules:
  default:
    models:
      - {model: A, revision: main, parameters: {weight: 0.6, density: 0.5, smooth: true}}
      - {model: B, parameters: {weight: 0.4, density: 0.7}}
    parameters: {normalize: true}
"""

# Random methods: one fine-tune, so the output's delta is the kept (and rescaled) part of the model's delta.
RANDOM = {
    "dare_linear": ("merge_method: dare_linear\nbase_model: BASE\nmodels:\n  - {model: A, parameters: "
                    "{weight: 0.8, density: 0.3}}\n", 0.3, 0.0),
    "dare_ties": ("merge_method: dare_ties\nbase_model: BASE\nmodels:\n  - {model: A, parameters: "
                  "{weight: 1.0, density: 0.6}}\n", 0.6, 0.0),
    "della": ("merge_method: della\nbase_model: BASE\nmodels:\n  - {model: A, parameters: "
              "{weight: 0.9, density: 0.5, epsilon: 0.2}}\n", 0.5, 0.2),
    "della_linear": ("merge_method: della_linear\nbase_model: BASE\nmodels:\n  - {model: A, parameters: "
                     "{weight: 0.7, density: 0.4, epsilon: 0.1}}\n", 0.4, 0.1),
}  # fmt: skip
# ... and with tiny row chunks: masks drawn chunk by chunk, the L1 rescale over the whole tensor.
RANDOM.update({f"{name}_streamed": RANDOM[name] for name in ("dare_ties", "della")})

# The same seed draws mergekit's masks: three models (C at density 1 draws nothing, B's density is a gradient),
# every random method in every dtype, whole tensors (bit-identical) and row chunks (each model's masks drawn from
# where the earlier models' end). Row chunks sum the L1 norms in float64 where mergekit's whole-tensor sum rounds
# in float32: the rescale factor may differ in its last float32 bit, which moves a float16 result by one rounding
# of the rescaled delta (`_assert_same_draws`).
RANDOM_MODELS = """base_model: BASE
models:
  - {model: A, parameters: {weight: 0.6, density: 0.4, epsilon: 0.1}}
  - {model: B, parameters: {weight: [0.2, 0.8], density: [0.7, 0.5], epsilon: 0.2}}
  - {model: C, parameters: {weight: 0.3, density: 1.0}}
"""
RANDOM_METHODS = ("dare_linear", "dare_ties", "della", "della_linear")


def _same_draws(method: str, dtype: str) -> str:
    models = RANDOM_MODELS if "della" in method else re.sub(r", epsilon: [0-9.]+", "", RANDOM_MODELS)
    return f"merge_method: {method}\n{models}dtype: {dtype}\n"


SAME_DRAWS = {f"{m}_{dtype}": _same_draws(m, dtype) for m in RANDOM_METHODS for dtype in ("float32", *HALF_DTYPES)}
# Row chunks: one per method by default (dtypes rotated), the rest in the long tail.
STREAMED_DRAWS = ("dare_ties_bfloat16", "della_float32", "dare_linear_float16", "della_linear_float16")
SLOW.update({f"{n}_streamed": t for n, t in SAME_DRAWS.items() if n not in STREAMED_DRAWS})
SAME_DRAWS.update({f"{n}_streamed": SAME_DRAWS[n] for n in STREAMED_DRAWS})
DRAW_CASES = {f"{m}_{dtype}{form}" for m in RANDOM_METHODS for dtype in ("float32", *HALF_DTYPES) for form in ("", "_streamed")}

MERGEKIT_SCRIPT = """
import json, sys, yaml
from mergekit.config import MergeConfiguration
from mergekit.merge import run_merge
from mergekit.options import MergeOptions
for config_path, out in json.loads(sys.argv[1]):
    config = MergeConfiguration.model_validate(yaml.safe_load(open(config_path)))
    run_merge(config, out, MergeOptions(quiet=True, random_seed=int(sys.argv[2]), copy_tokenizer=False))
"""


def _run_parity(root: Path, cases: dict[str, str]) -> dict[str, tuple[Path, Path]]:
    """Every config through `mergescope merge` here and through mergekit in one process: {case: (ours, theirs)}."""
    config = llama_config(num_hidden_layers=3)
    family = write_family(root / "family", config, ("base", "a", "b", "c"), delta_scale=0.5)
    # The base again, sharded with an index: the loaders must agree on either layout.
    sharded = write_family(root / "sharded", config, ("base",), delta_scale=0.5, shard_size=120_000)["base"]
    assert (sharded / "model.safetensors.index.json").exists()
    paths = {"BASE": sharded, "A": family["a"], "B": family["b"], "C": family["c"]}
    jobs, result = [], {}
    for name, text in cases.items():
        for key, path in paths.items():
            text = text.replace(f"model: {key}", f"model: {path}").replace(f"base_model: {key}", f"base_model: {path}")
        yml = root / f"{name}.yml"
        yml.write_text(text)
        theirs, ours = root / f"mergekit-{name}", root / f"ours-{name}"
        jobs.append((str(yml), str(theirs)))
        saved = merge_module.CHUNK_BYTES, merge_module.HALF_WHOLE_BYTES
        if name.endswith("_streamed"):  # tiny row chunks, statistics methods' multi-pass form included
            merge_module.CHUNK_BYTES, merge_module.HALF_WHOLE_BYTES = 1000, 0
        try:
            assert cli_main(["merge", str(yml), "--out", str(ours), "--quiet", "--seed", str(SEED)]) == 0
        finally:
            merge_module.CHUNK_BYTES, merge_module.HALF_WHOLE_BYTES = saved
        result[name] = (ours, theirs)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-c", MERGEKIT_SCRIPT, json.dumps(jobs), str(SEED)], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    cases = {**DETERMINISTIC, **SAME_DRAWS, **{k: v[0] for k, v in RANDOM.items()}}
    return _run_parity(tmp_path_factory.mktemp("parity"), cases)


@pytest.fixture(scope="module")
def slow_outputs(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    return _run_parity(tmp_path_factory.mktemp("parity-slow"), SLOW)


def _pairs(ours: Path, theirs: Path):
    a, b = open_checkpoint(ours), open_checkpoint(theirs)
    assert sorted(a.tensor_names()) == sorted(b.tensor_names())
    for name in b.tensor_names():
        yield name, a.get(name).float(), b.get(name).float()


def _assert_same(case: str, ours: Path, theirs: Path) -> None:
    """float32 configs: max |ours − theirs| / max |theirs| <= 1e-5 per tensor. Half-precision configs: every
    element within one rounding step of the config's dtype (mergekit leaves arcee_fusion and ramplus_tl results
    in float32 by type promotion; we write the compute dtype, so ours is theirs rounded once)."""
    dtype = case.removesuffix("_streamed").rsplit("_", 1)[-1]  # (not endswith: "bfloat16" ends with "float16")
    half = getattr(torch, dtype) if dtype in HALF_DTYPES else None
    checked = 0
    for name, x, y in _pairs(ours, theirs):
        assert x.shape == y.shape, name
        if half is None:
            rel = ((x - y).abs().max() / y.abs().max().clamp(min=1e-12)).item()
            assert rel <= 1e-5, f"{case}: {name} differs from mergekit (max relative difference {rel:.2e})"
        else:
            info = torch.finfo(half)
            step = info.eps * y.abs().clamp(min=info.tiny)  # the dtype's spacing at |y| (an upper bound)
            worst = ((x - y).abs() / step).max().item()
            assert worst <= 1.0, f"{case}: {name} is {worst:.1f} rounding steps from mergekit's"
        checked += 1
    assert checked == 3 * 9 + 3


@pytest.mark.parametrize("case", sorted(DETERMINISTIC))
def test_same_tensors_as_mergekit(outputs, case):
    _assert_same(case, *outputs[case])


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(SLOW))
def test_same_tensors_as_mergekit_long_tail(slow_outputs, case):
    (_assert_same_draws if case in DRAW_CASES else _assert_same)(case, *slow_outputs[case])


def _assert_same_draws(case: str, ours: Path, theirs: Path) -> None:
    """A random method with mergekit's seed: whole tensors bit-identical. Row chunks: float32 within 1e-5; half
    precision elementwise within one rounding of the largest intermediate (the output or a rescaled delta, at most
    2.5x the model's delta here: densities >= 0.4), and on at most 0.1% of the entries."""
    streamed = case.endswith("_streamed")
    dtype = case.removesuffix("_streamed").rsplit("_", 1)[1]
    config = load_config(ours / "mergekit_config.yml")
    base = open_checkpoint(Path(config.base_model))
    models = [open_checkpoint(Path(m.model)) for m in config.models]
    differ = total = 0
    for name, x, y in _pairs(ours, theirs):
        total += y.numel()
        if not streamed:
            assert torch.equal(x, y), f"{case}: {name} differs from mergekit on {int((x != y).sum())} entries"
        elif dtype == "float32":
            rel = ((x - y).abs().max() / y.abs().max()).item()
            assert rel <= 1e-5, f"{case}: {name} differs from mergekit (max relative difference {rel:.2e})"
        else:
            b = base.get(name).float()
            deltas = sum((m.get(name).float() - b).abs() for m in models)
            step = torch.finfo(getattr(torch, dtype)).eps * (y.abs() + 2.5 * deltas)
            worst = ((x - y).abs() / step).max().item()
            assert worst <= 1.0, f"{case}: {name} is {worst:.2f} roundings from mergekit's"
            differ += int((x != y).sum())
    assert differ <= 0.001 * total, f"{case}: {differ} of {total} entries differ from mergekit's"


@pytest.mark.parametrize("case", sorted(n for n in SAME_DRAWS if n in DRAW_CASES))
def test_random_methods_draw_mergekits_masks(outputs, case):
    _assert_same_draws(case, *outputs[case])


def test_every_mergekit_method_is_covered():
    """Every method of the installed mergekit has a parity case, also in half precision, except the random ones
    (compared statistically below) and passthrough (covered with slices)."""
    from mergekit.merge_methods.registry import registered_methods

    theirs = {m.spec.name for m in registered_methods()}
    random = {text.split("merge_method: ")[1].split()[0] for text, *_ in RANDOM.values()}
    assert set(ONE_PER_METHOD) | random | {"passthrough"} == theirs
    assert {n.rsplit("_", 1)[0] for n in HALF_DEFAULT} == set(ONE_PER_METHOD.values())


def test_parity_cases_are_not_trivial(outputs):
    """Guard against a vacuous parity: the merges differ from their inputs and from each other."""
    base = open_checkpoint(outputs["task_arithmetic"][1])
    ties = open_checkpoint(outputs["ties"][1])
    name = "model.layers.1.mlp.up_proj.weight"
    assert not torch.allclose(base.get(name), ties.get(name))
    # Layer gradients really vary along the depth: the slerp t for self_attn goes 0 -> 0.5 -> 1.
    slerp = open_checkpoint(outputs["slerp"][0])
    q0 = slerp.get("model.layers.0.self_attn.q_proj.weight")
    q2 = slerp.get("model.layers.2.self_attn.q_proj.weight")
    assert not torch.allclose(q0, q2)
    # The selecting methods really select: part of the output is the base's, part the model's (or a mix).
    config = load_config(outputs["arcee_fusion"][0] / "mergekit_config.yml")
    b, a = open_checkpoint(Path(config.base_model)).get(name), open_checkpoint(Path(config.models[1].model)).get(name)
    for case in ("arcee_fusion", "ram", "sce"):
        merged = open_checkpoint(outputs[case][1]).get(name)
        from_base = (merged == b).float().mean().item()
        assert 0.0 < from_base < 0.95, f"{case}: {from_base:.2%} of the entries are the base's"
    fused = open_checkpoint(outputs["arcee_fusion"][1]).get(name)
    took = torch.isclose(fused, a, rtol=1e-6, atol=1e-7)
    assert (took | (fused == b)).all() and took.any()
    # nearswap moves every entry part of the way (all the way where the models are within t of each other)
    swapped = open_checkpoint(outputs["nearswap"][1]).get(name)
    assert ((swapped - b) * (a - b) >= -1e-9).all() and ((swapped - b).abs() <= (a - b).abs() + 1e-7).all()
    assert not torch.allclose(swapped, a) and not torch.allclose(swapped, b)


def _kept_stats(ours: Path, base: Path, model: Path):
    """Per checkpoint: kept fraction, kept fraction among the larger / smaller half of |delta| per row,
    and the ratio L1(out - base) / L1(delta)."""
    out_ck, base_ck, model_ck = open_checkpoint(ours), open_checkpoint(base), open_checkpoint(model)
    kept = total = top_kept = top_total = 0
    ratios = []
    for name in base_ck.tensor_names():
        b = base_ck.get(name).float()
        delta = model_ck.get(name).float() - b
        merged = out_ck.get(name).float() - b
        keep = merged != 0
        kept += int(keep.sum())
        total += keep.numel()
        rows = delta.abs() if delta.dim() == 2 else delta.abs().unsqueeze(0)
        keep_rows = keep if keep.dim() == 2 else keep.unsqueeze(0)
        top = rows >= rows.median(dim=1, keepdim=True).values
        top_kept += int((keep_rows & top).sum())
        top_total += int(top.sum())
        ratios.append((merged.abs().sum() / delta.abs().sum()).item())
    bottom = (kept - top_kept) / (total - top_total)
    return kept / total, top_kept / top_total, bottom, ratios


@pytest.mark.parametrize("case", sorted(RANDOM))
def test_random_methods_match_mergekit_statistically(outputs, case):
    text, density, epsilon = RANDOM[case]
    ours, theirs = outputs[case]
    config = load_config(ours / "mergekit_config.yml")
    base, model = Path(config.base_model), Path(config.models[0].model)
    weight = float(config.models[0].parameters["weight"])
    stats = {who: _kept_stats(path, base, model) for who, path in (("ours", ours), ("mergekit", theirs))}
    n = sum(p.numel() for _, p, _ in _pairs(ours, theirs))
    tol = 5 * (density * (1 - density) / n) ** 0.5 * 2 + 0.003  # generous binomial bound (top/bottom halves)
    for who, (frac, top, bottom, ratios) in stats.items():
        assert abs(frac - density) < tol, f"{who}: kept {frac:.4f}, density {density}"
        # DELLA keeps large deltas more often (density ± epsilon by rank); DARE does not care about magnitude.
        assert abs((top - bottom) - epsilon) < 0.03 + 4 * tol, f"{who}: top {top:.3f} bottom {bottom:.3f}"
        # rescale=true (all four methods' default) restores each tensor's L1 norm exactly, times the weight
        # (dare_ties/della_linear/dare_linear do not normalize; della normalizes by the one weight).
        expected = 1.0 if config.merge_method == "della" else weight
        assert all(abs(r - expected) < 1e-3 for r in ratios), f"{who}: L1 ratios {ratios[:4]}"
    assert abs(stats["ours"][0] - stats["mergekit"][0]) < 2 * tol
