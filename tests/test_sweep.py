"""The sweep runner: points, keys, heuristic, and real sweeps through the session's vLLM engine (store reuse,
resume after a stop, a failure mid-sweep that keeps what was done)."""

from __future__ import annotations

import shutil

import pytest

from engine.backends import GenerationSettings
from engine.errors import BackendError, ConfigError, MergescopeError
from engine.store import ResultStore, stable_hash
from engine.sweep import (
    SweepSpec,
    format_weights,
    heuristic_weight,
    parse_weights,
    prepare_sweep,
    run_sweep,
    suite_settings,
    variant_identity,
)


# --- pure parts ------------------------------------------------------------------------------------------------
def test_parse_weights_range_is_exact_and_inclusive():
    weights = parse_weights("0:1:0.1")
    assert len(weights) == 11 and weights[0] == 0.0 and weights[-1] == 1.0
    assert weights[3] == 0.3  # rounded: a stable store key, not 0.30000000000000004
    assert parse_weights("0.5, 0.2,0.5") == [0.5, 0.2]
    assert parse_weights("0:0.5:0.25") == [0.0, 0.25, 0.5]


@pytest.mark.parametrize("text", ["", "0:1", "0:1:0", "1:0:0.1", "a,b", "0:1:-1"])
def test_parse_weights_rejects_bad_text(text):
    with pytest.raises(ConfigError, match="--weights"):
        parse_weights(text)


def test_format_weights():
    assert format_weights((0.3,)) == "ω=0.3"
    assert format_weights((0.2, 1.0)) == "ω=(0.2,1)"


def _tiny_checkpoint(folder, seed: int):
    import json

    import torch
    from safetensors.torch import save_file

    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 1}))
    g = torch.Generator().manual_seed(seed)
    tensors = {f"model.layers.0.w{i}": torch.randn(64, 64, generator=g) for i in range(8)}
    save_file(tensors, folder / "model.safetensors")
    return folder


@pytest.mark.parametrize("full_hash_bytes", [None, 1024])  # whole-file hash, and the sampled path
def test_checkpoint_identity_tells_fine_tunes_apart(tmp_path, monkeypatch, full_hash_bytes):
    """Two fine-tunes of one architecture have the same headers: the store key must still tell them apart."""
    import engine.checkpoint as checkpoint_module
    from engine.checkpoint import open_checkpoint

    if full_hash_bytes is not None:
        monkeypatch.setattr(checkpoint_module, "FULL_HASH_BYTES", full_hash_bytes)
    a = open_checkpoint(_tiny_checkpoint(tmp_path / "a", seed=1))
    b = open_checkpoint(_tiny_checkpoint(tmp_path / "b", seed=2))
    a_copy = open_checkpoint(shutil.copytree(a.path, tmp_path / "elsewhere"))
    ids = [c.identity() for c in (a, b, a_copy)]
    assert ids[0] != ids[1] and ids[0] == ids[2]


def _spec(family, **kw) -> SweepSpec:
    skills = kw.pop("skills", {n: str(p) for n, p in list(family.skills.items())[:1]})
    return SweepSpec(
        base=str(family.base),
        general=str(family.general),
        skills=skills,
        suites=kw.pop("suites", [str(p) for p in family.suites]),
        **kw,
    )


def test_spec_points_1d_grid_and_references(demo_family):
    spec = _spec(demo_family, weights=[0.0, 0.5, 1.0])
    points = spec.points()
    refs = [p for p in points if p.kind == "reference"]
    variants = [p for p in points if p.kind == "variant"]
    assert [p.label for p in refs][:2] == ["general", "base"] and len(refs) == 3
    assert [p.weights for p in variants] == [(0.0,), (0.5,), (1.0,)]

    two = dict(list(demo_family.skills.items())[:2])
    if len(two) == 2:
        grid = _spec(demo_family, skills={k: str(v) for k, v in two.items()}, weights=[0.0, 1.0], grid=True)
        assert sorted(p.weights for p in grid.points() if p.kind == "variant") == [
            (0.0, 0.0),
            (0.0, 1.0),
            (1.0, 0.0),
            (1.0, 1.0),
        ]
    with pytest.raises(ConfigError, match="--grid needs exactly two skills"):
        _spec(demo_family, grid=True)
    with pytest.raises(ConfigError, match="no eval suites"):
        _spec(demo_family, suites=[])


def test_skills_as_list_take_folder_names(demo_family):
    path = str(next(iter(demo_family.skills.values())))
    spec = _spec(demo_family, skills=[path, f"mine={path}"])
    assert list(spec.skill_paths) == [path.rstrip("/").rsplit("/", 1)[-1], "mine"]
    with pytest.raises(ConfigError, match="given twice"):
        _spec(demo_family, skills=[path, path])


def test_heuristic_weight_from_sizes_and_metadata(demo_family):
    from engine.checkpoint import open_checkpoint

    general = open_checkpoint(demo_family.general)
    name, path = next(iter(demo_family.skills.items()))
    skill = open_checkpoint(path)
    assert heuristic_weight(general, skill, {"general": 275_000, name: 61_000}, skill=name) == pytest.approx(
        61 / 275
    )
    sizes = dict(demo_family.dataset_sizes or {})
    if "general" in sizes and name in sizes:
        # The demo family knows its sizes: prepare_sweep reports the heuristic and adds it as a marked point.
        prepared = prepare_sweep(_spec(demo_family, weights=[0.0, 1.0], dataset_sizes=sizes))
        assert prepared.heuristic[name] == pytest.approx(sizes[name] / sizes["general"])
        marked = [p for p in prepared.points if p.heuristic]
        assert len(marked) == 1 and marked[0].weights == (round(sizes[name] / sizes["general"], 3),)


def test_variant_identity_follows_content_not_paths(demo_family, tmp_path):
    """Moving the checkpoints keeps the store key; different weights change it."""
    from engine.config import ptm_config

    prepared = prepare_sweep(_spec(demo_family, weights=[0.5]))
    moved = {}
    for role, path in prepared.spec.checkpoint_refs().items():
        moved[role] = str(shutil.copytree(path, tmp_path / role.replace(":", "-")))
    moved_spec = SweepSpec(
        base=moved["base"],
        general=moved["general"],
        skills={n: moved[f"skill:{n}"] for n in prepared.spec.skill_paths},
        weights=[0.5],
        suites=prepared.spec.suites,
    )
    moved_prepared = prepare_sweep(moved_spec)

    def key_of(prep, omega):
        skill = next(iter(prep.spec.skill_paths.values()))
        config = ptm_config(prep.spec.base, prep.spec.general, {skill: omega})
        return stable_hash(variant_identity(config, prep.identities))

    assert key_of(prepared, 0.5) == key_of(moved_prepared, 0.5)
    assert key_of(prepared, 0.5) != key_of(prepared, 0.6)


def test_suite_settings_override_defaults(demo_family):
    from evals import load_suites

    suite = load_suites([str(p) for p in demo_family.suites])[0]
    settings = suite_settings(suite, GenerationSettings(max_tokens=5, seed=3))
    for key, value in (suite.generation or {}).items():
        assert getattr(settings, key) == value
    if "seed" not in (suite.generation or {}):
        assert settings.seed == 3


# --- real sweeps ---------------------------------------------------------------------------------------------
@pytest.mark.vllm
def test_sweep_stores_reuses_and_resumes(vllm_backend, demo_family, tmp_path):
    spec = _spec(demo_family, weights=[0.0, 1.0], standard_references=False, heuristic_point=False)
    prepared = prepare_sweep(spec)
    path = tmp_path / "results.db"
    with ResultStore(path) as store:
        # Stop after the first point, as a killed sweep would.
        first = next(run_sweep(prepared, vllm_backend, store))
        assert not first.cached and first.timings["generate_s"] > 0
    swaps_before = vllm_backend.swaps
    seen = []
    with ResultStore(path) as store:
        results = list(
            run_sweep(prepared, vllm_backend, store, on_progress=lambda i, n, r: seen.append((i, n)))
        )
    assert seen == [(0, 2), (1, 2)]
    assert [r.cached for r in results] == [True, False]  # resumed: point 1 reused, point 2 computed
    assert results[0].scores == first.scores
    assert results[1].weights == (1.0,) and results[1].scores.suites
    # A third run computes nothing and swaps nothing.
    swaps = vllm_backend.swaps
    with ResultStore(path) as store:
        again = list(run_sweep(prepared, vllm_backend, store))
        points = store.sweep_points(store.resolve_sweep())
    assert all(r.cached for r in again) and vllm_backend.swaps == swaps
    assert swaps > swaps_before
    assert [p["label"] for p in points] == ["ω=0", "ω=1"]
    assert points[1]["scores"]["aggregates"] == again[1].aggregates()


@pytest.mark.vllm
def test_engine_failure_mid_sweep_keeps_finished_points(vllm_backend, demo_family, tmp_path):
    skill_copy = shutil.copytree(next(iter(demo_family.skills.values())), tmp_path / "skill-copy")
    spec = _spec(demo_family, skills={"copy": str(skill_copy)}, weights=[0.0, 1.0])
    prepared = prepare_sweep(spec)
    labels = [p.label for p in prepared.points]
    assert labels[:3] == ["general", "base", "skill:copy"]

    def break_skill(index, total, result):
        if index == 0:  # after the first point, the skill checkpoint's weights go bad on disk
            for f in skill_copy.glob("*.safetensors"):
                f.write_bytes(b"\x00" * 64)

    done = []
    with ResultStore(tmp_path / "r.db") as store:
        with pytest.raises(MergescopeError) as failure:
            for result in run_sweep(prepared, vllm_backend, store, on_progress=break_skill):
                done.append(result.label)
        assert isinstance(failure.value, BackendError | MergescopeError)
        assert done == ["general", "base"]
        stored = store.sweep_points(store.resolve_sweep())
    assert [p["label"] for p in stored] == ["general", "base"]
