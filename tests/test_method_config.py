"""Config-level behaviour of the merge methods: parameters mergekit accepts and ignores (warned, no effect),
names no method reads (ignored, with a warning), mergekit's input counts, and mergekit's dtype semantics with our float32 option."""

from __future__ import annotations

import warnings

import pytest
import torch

from engine.checkpoint import open_checkpoint
from engine.cli import main as cli_main
from engine.config import IgnoredParameterWarning, load_config
from engine.errors import ConfigError
from engine.merge import merge_tensors
from engine.methods import METHODS
from engine.synthetic import llama_config, write_family


@pytest.fixture(scope="module")
def fam(tmp_path_factory):
    return write_family(tmp_path_factory.mktemp("fam"), llama_config(num_hidden_layers=2), ("base", "a", "b"),
                        delta_scale=0.5)  # fmt: skip


def _merge(tmp_path, text: str, name: str, *extra: str) -> dict[str, torch.Tensor]:
    yml = tmp_path / f"{name}.yml"
    yml.write_text(text)
    out = tmp_path / name
    assert cli_main(["merge", str(yml), "--out", str(out), "-q", *extra]) == 0
    ck = open_checkpoint(out)
    return {n: ck.get(n) for n in ck.tensor_names()}


def test_ignored_parameters_warn_and_leave_the_result_unchanged(fam, tmp_path, capsys):
    plain = f"merge_method: slerp\nbase_model: {fam['base']}\nmodels:\n  - {{model: {fam['a']}}}\nparameters: {{t: 0.3}}\n"
    noisy = (
        f"merge_method: slerp\nbase_model: {fam['base']}\nmodels:\n"
        f"  - {{model: {fam['base']}, parameters: {{weight: 1.0}}}}\n"
        f"  - {{model: {fam['a']}, parameters: {{weight: 0.5, t: 0.9}}}}\n"
        "parameters: {t: 0.3, normalize: true}\n"
    )
    with pytest.warns(IgnoredParameterWarning) as caught:
        config = load_config(noisy)
    assert len(config.ignored) == 4 == len(caught)
    assert all("merge_method slerp" in note for note in config.ignored)
    for key in ("'weight'", "'t'", "'normalize'"):
        assert any(key in note for note in config.ignored), key
    assert any("models[1]" in n and "'t'" in n and "top-level" in n for n in config.ignored)
    a = _merge(tmp_path, plain, "plain")
    capsys.readouterr()
    b = _merge(tmp_path, noisy, "noisy")
    err = capsys.readouterr().err
    assert err.count("warning: ") == 4 and "'normalize' is ignored by merge_method slerp" in err
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


def test_model_stock_ignores_per_model_weights(fam):
    text = (f"merge_method: model_stock\nbase_model: {fam['base']}\nmodels:\n"
            f"  - {{model: {fam['a']}, parameters: {{weight: 0.3}}}}\n  - {{model: {fam['b']}, parameters: {{weight: 0.7}}}}\n")  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = load_config(text)
    assert [str(w.message) for w in caught] == list(config.ignored) and len(config.ignored) == 2


def test_fields_mergekit_does_not_read_are_ignored_with_a_warning_and_change_nothing(fam):
    """mergekit's pydantic models drop unknown keys and its methods read parameters by name: real configs carry
    strays (out_path, a per-model revision, a misspelt parameter) and run there. Here too, each named in a warning
    (with the likely spelling), and the merge is the one without them."""
    clean = (f"merge_method: ties\nbase_model: {fam['base']}\nmodels:\n"
             f"  - {{model: {fam['a']}, parameters: {{weight: 0.6, density: 0.5}}}}\n"
             f"  - {{model: {fam['b']}, parameters: {{weight: 0.4, density: 0.7}}}}\n")  # fmt: skip
    stray = (f"merge_method: ties\nbase_model: {fam['base']}\nout_path: ./merged\nmodels:\n"
             f"  - {{model: {fam['a']}, revision: main, parameters: {{weight: 0.6, density: 0.5, densty: 0.1}}}}\n"
             f"  - {{model: {fam['b']}, parameters: {{weight: 0.4, density: 0.7}}}}\n"
             "parameters: {smooth: true}\n")  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = load_config(stray)
    notes = [str(w.message) for w in caught]
    assert notes == list(config.ignored) and len(notes) == 4
    assert any("'out_path'" in n for n in notes)
    assert any("'revision'" in n and "repo@revision" in n for n in notes)
    assert any("'densty'" in n and "did you mean 'density'" in n for n in notes)
    assert any("'smooth'" in n and "no mergekit method reads it" in n for n in notes)
    ours, reference = dict(merge_tensors(config)), dict(merge_tensors(load_config(clean)))
    assert ours.keys() == reference.keys()
    assert all(torch.equal(ours[n], reference[n]) for n in reference)


def test_modules_default_is_the_top_level_form(fam):
    """`modules: {default: ...}` (mergekit's form for a model with one layer stack) merges as the same keys at the
    top level; module parameters override the top-level ones."""
    models = f"[{{model: {fam['a']}, parameters: {{weight: 0.3}}}}, {{model: {fam['b']}, parameters: {{weight: 0.7}}}}]"
    top = load_config(f"merge_method: linear\nmodels: {models}\nparameters: {{normalize: false}}\n")
    lifted = load_config(
        f"merge_method: linear\nparameters: {{normalize: true}}\nmodules:\n  default:\n    models: {models}\n"
        "    parameters: {normalize: false}\n"
    )
    assert lifted == top
    ours, reference = dict(merge_tensors(lifted)), dict(merge_tensors(top))
    assert all(torch.equal(ours[n], reference[n]) for n in reference)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("merge_method: nuslerp\nmodels: [{model: a}, {model: b}, {model: c}]\nparameters: {weight: 1}\n", "exactly 2"),
        ("merge_method: arcee_fusion\nbase_model: x\nmodels: [{model: a}, {model: b}]\n", "exactly 1"),
        ("merge_method: nearswap\nmodels: [{model: a}, {model: b}]\nparameters: {t: 1}\n", "needs a base_model"),
    ],
)
def test_input_counts_follow_mergekit(text, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config(text)


def test_base_policies():
    assert {n for n, m in METHODS.items() if m.base == "optional"} == {"nuslerp", "multislerp"}
    assert {n for n, m in METHODS.items() if m.base == "ignored"} >= {"linear", "karcher"}
    # a method that ignores bases reads a base_model missing from its models as one more input, as mergekit does
    config = load_config("merge_method: karcher\nbase_model: x\nmodels: [{model: a}, {model: b}]\n")
    assert config.input_models() == ["a", "b", "x"]
    config = load_config("merge_method: nuslerp\nbase_model: x\nmodels: [{model: x}, {model: a, parameters: "
                         "{weight: 1}}, {model: b, parameters: {weight: 2}}]\n")  # fmt: skip
    assert config.input_models() == ["a", "b"]


def test_half_precision_computes_in_half_unless_compute_dtype_says_float32(fam, tmp_path):
    """mergekit's semantics: `dtype: float16` is the compute dtype. Our `compute_dtype: float32` (config field or
    --compute-dtype) computes in float32 and rounds once to the same output dtype; the model card says which."""
    base, a, b = (open_checkpoint(fam[k]) for k in ("base", "a", "b"))
    text = (f"merge_method: task_arithmetic\nbase_model: {fam['base']}\nmodels:\n"
            f"  - {{model: {fam['a']}, parameters: {{weight: 0.7}}}}\n  - {{model: {fam['b']}, parameters: {{weight: 0.45}}}}\n"
            "dtype: float16\n")  # fmt: skip
    half = _merge(tmp_path, text, "half")
    precise = _merge(tmp_path, text + "compute_dtype: float32\n", "precise")
    flagged = _merge(tmp_path, text, "flagged", "--compute-dtype", "float32")
    name = "model.layers.1.mlp.up_proj.weight"
    x0, xa, xb = (c.get(name) for c in (base, a, b))
    h0, ha, hb = (t.half() for t in (x0, xa, xb))
    # mergekit's steps, each rounded to half: deltas, times the weights (as half), summed, plus the base
    weights = torch.tensor([0.7, 0.45], dtype=torch.float16).view(-1, 1, 1)
    assert torch.equal(half[name], h0 + (torch.stack([ha - h0, hb - h0]) * weights).sum(dim=0))
    expected = (x0 + 0.7 * (xa - x0) + 0.45 * (xb - x0)).half()
    assert (precise[name].float() - expected.float()).abs().max() <= 1e-3 * expected.abs().max().float()
    assert all(t.dtype == torch.float16 for t in (half[name], precise[name]))
    assert not torch.equal(half[name], precise[name])
    assert all(torch.equal(precise[n], flagged[n]) for n in precise)
    assert "Computed in `dtype` float16, as mergekit does" in (tmp_path / "half" / "README.md").read_text()
    card = (tmp_path / "precise" / "README.md").read_text()
    assert "Computed in float32" in card and "compute_dtype: float32" in card
