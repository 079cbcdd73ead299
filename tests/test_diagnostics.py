"""Task-vector diagnostics against hand-computed values: per-layer norms, cosine similarity, sign-conflict rate;
once on tensors (pure accumulator), once streaming from real safetensors checkpoints."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import save_file

from engine.diagnostics import DiagnosticsAccumulator, layer_group, task_vector_diagnostics
from engine.errors import CheckpointError

NAMES = [
    "model.embed_tokens.weight",
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.1.mlp.up_proj.weight",
    "model.norm.weight",
]


def test_layer_groups():
    assert [layer_group(n) for n in NAMES] == ["embed", "layer 0", "layer 1", "head/norm"]
    assert layer_group("lm_head.weight") == "head/norm"
    assert layer_group("transformer.h.11.attn.c_attn.weight") == "layer 11"


def _tensors() -> tuple[dict, dict, dict]:
    base = {n: torch.full((2, 2), 0.5) for n in NAMES}
    # τ_a and τ_b per tensor, chosen so every sum is easy to do by hand.
    tau_a = {
        NAMES[0]: torch.tensor([[1.0, 0.0], [0.0, 0.0]]),
        NAMES[1]: torch.tensor([[3.0, 4.0], [0.0, 0.0]]),
        NAMES[2]: torch.tensor([[1.0, -1.0], [1.0, -1.0]]),
        NAMES[3]: torch.zeros(2, 2),
    }
    tau_b = {
        NAMES[0]: torch.tensor([[-1.0, 0.0], [0.0, 0.0]]),
        NAMES[1]: torch.tensor([[3.0, 4.0], [0.0, 0.0]]),
        NAMES[2]: torch.tensor([[1.0, 1.0], [0.0, 2.0]]),
        NAMES[3]: torch.tensor([[0.0, 0.0], [0.0, 1.0]]),
    }
    skill_a = {n: base[n] + tau_a[n] for n in NAMES}
    skill_b = {n: base[n] + tau_b[n] for n in NAMES}
    return base, skill_a, skill_b


def _check(diag) -> None:
    assert diag.groups == ["embed", "layer 0", "layer 1", "head/norm"]
    assert diag.layer_norms["a"] == pytest.approx([1.0, 5.0, 2.0, 0.0])
    assert diag.layer_norms["b"] == pytest.approx([1.0, 5.0, math.sqrt(6), 1.0])
    assert diag.total_norms["a"] == pytest.approx(math.sqrt(1 + 25 + 4))
    assert diag.total_norms["b"] == pytest.approx(math.sqrt(1 + 25 + 6 + 1))
    # dot = -1 (embed) + 25 (layer 0) + (1 - 1 + 0 - 2) (layer 1) + 0 = 22
    assert diag.cosine[("a", "b")] == pytest.approx(22 / (math.sqrt(30) * math.sqrt(33)))
    # coordinates where both change: embed 1 (conflict), layer 0 2 (agree), layer 1 3 (two conflicts) -> 3/6
    assert diag.sign_conflict[("a", "b")] == pytest.approx(0.5)


def test_accumulator_matches_hand_computed_values():
    base, skill_a, skill_b = _tensors()
    acc = DiagnosticsAccumulator(["a", "b"])
    for name in NAMES:
        acc.add(name, base[name], {"a": skill_a[name], "b": skill_b[name]})
    diag = acc.result()
    _check(diag)
    assert diag.tensors == 4
    pair = diag.to_dict()["pairs"][0]
    assert pair["a"] == "a" and pair["b"] == "b" and pair["sign_conflict"] == pytest.approx(0.5)
    assert "sign conflicts 50.0%" in diag.format()


def test_accumulator_names_a_shape_mismatch():
    acc = DiagnosticsAccumulator(["a"])
    with pytest.raises(CheckpointError, match=r"model\.norm\.weight.*\(3,\)"):
        acc.add("model.norm.weight", torch.zeros(2), {"a": torch.zeros(3)})


def _write_checkpoint(folder, tensors) -> str:
    folder.mkdir(parents=True)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 2,
        "num_hidden_layers": 2,
        "vocab_size": 2,
    }
    (folder / "config.json").write_text(json.dumps(config))
    save_file({n: t.contiguous() for n, t in tensors.items()}, str(folder / "model.safetensors"))
    return str(folder)


def test_streaming_from_checkpoints(tmp_path):
    pytest.importorskip("engine.checkpoint")
    base, skill_a, skill_b = _tensors()
    seen = []
    diag = task_vector_diagnostics(
        _write_checkpoint(tmp_path / "base", base),
        {"a": _write_checkpoint(tmp_path / "a", skill_a), "b": _write_checkpoint(tmp_path / "b", skill_b)},
        progress=lambda i, n: seen.append((i, n)),
    )
    _check(diag)
    assert seen[-1] == (4, 4)


def test_missing_tensor_is_named(tmp_path):
    pytest.importorskip("engine.checkpoint")
    base, skill_a, _ = _tensors()
    del skill_a[NAMES[2]]
    with pytest.raises(CheckpointError, match=r"lacks tensor model\.layers\.1\.mlp\.up_proj\.weight"):
        task_vector_diagnostics(
            _write_checkpoint(tmp_path / "base", base), {"a": _write_checkpoint(tmp_path / "a", skill_a)}
        )


def test_demo_family_skills_interfere_measurably(demo_family):
    diag = task_vector_diagnostics(demo_family.base, dict(demo_family.skills))
    assert set(diag.skills) == set(demo_family.skills)
    assert all(norm > 0 for norm in diag.total_norms.values())
    if len(diag.skills) >= 2:
        (pair, cos), *_ = diag.cosine.items()
        assert -1.0 <= cos <= 1.0 and 0.0 < diag.sign_conflict[pair] < 1.0
