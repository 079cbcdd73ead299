"""Resident swaps in the real engines: a sweep's checkpoints stay in engine memory, the swap says which path it
took, and the replies are exactly those of the streaming path (which itself matches a fresh engine on the
exported checkpoint: bench/sweep_bench.py checks that at every size). In vLLM a task-arithmetic swap is written
straight into the served parameters (path "direct"): the weights it serves are bit for bit those vLLM's own
loader serves from the exported checkpoint."""

from __future__ import annotations

import pytest

from engine.backends import GenerationSettings, make_backend
from engine.backends.machine import serving_dtype

GREEDY = GenerationSettings(max_tokens=16, temperature=0.0)


def _prompts(family, n: int = 8) -> list[list[dict[str, str]]]:
    from evals import load_suites

    prompts: list[list[dict[str, str]]] = []
    for suite in load_suites([str(p) for p in family.suites]):
        prompts += suite.prompts()[:2]
    return prompts[:n]


def _ptm(family, omega: float):
    from engine.config import ptm_config

    skill = next(iter(family.skills.values()))
    return ptm_config(str(family.base), str(family.general), {str(skill): omega})


def _replies_both_paths(backend, family) -> tuple[list[str], list[str], list[str]]:
    """Replies of one variant from resident inputs, from the streaming path, and of the general model."""
    prompts = _prompts(family)
    variant = _ptm(family, 0.6)
    general = backend.generate(None, prompts, GREEDY)
    mode = backend.resident_mode
    resident = backend.generate(variant, prompts, GREEDY)
    assert backend.swap_path in ("direct", "resident"), backend.swap_reason
    backend.generate(None, prompts, GREEDY)  # swap away, so the next call swaps the variant in again
    try:
        backend.resident_mode = "off"
        streamed = backend.generate(variant, prompts, GREEDY)
        assert backend.swap_path == "streaming" and "off" in backend.swap_reason
    finally:
        backend.resident_mode = mode
    return general, resident, streamed


@pytest.mark.vllm
def test_vllm_resident_swap_matches_streaming(vllm_backend, demo_family):
    assert vllm_backend.dtype == vllm_backend.describe()["dtype"]
    general, resident, streamed = _replies_both_paths(vllm_backend, demo_family)
    assert resident == streamed
    assert resident != general  # the variant really is another model


def _as_is(path) -> object:
    """A config that serves one checkpoint as it is (the backends load it through vLLM's own loader)."""
    from engine.config import config_from_dict

    return config_from_dict({"merge_method": "linear", "models": [{"model": str(path), "parameters": {"weight": 1.0}}]})


def _check_direct_swap_serves_the_export(backend, family, tmp_path) -> None:
    """A direct swap serves bit for bit the weights vLLM's own loader serves from the exported checkpoint, and
    later direct swaps after such a reload leave nothing over."""
    from engine.export import export_merge

    prompts = _prompts(family)
    variant = _ptm(family, 0.6)
    backend.generate(None, prompts, GREEDY)
    general = backend.served_digests()
    direct = backend.generate(variant, prompts, GREEDY)
    assert backend.swap_path == "direct", backend.swap_reason
    assert backend.swap_detail["write_s"] > 0
    written = backend.served_digests()
    assert written != general  # the digests do see a change of weights
    # vLLM's own path on the exported files: reload_weights runs its loaders and re-packs every layer.
    exported = export_merge(variant, tmp_path / "merged")
    loaded = backend.generate(_as_is(exported), prompts, GREEDY)
    assert backend.served_digests() == written
    assert loaded == direct
    # Direct swaps after vLLM's own reload: another variant, then back; the same weights (nothing left over).
    backend.generate(_ptm(family, 0.2), prompts[:1], GREEDY)
    assert backend.swap_path == "direct"
    assert backend.served_digests() != written
    assert backend.generate(variant, prompts, GREEDY) == direct
    assert backend.served_digests() == written


@pytest.mark.vllm
def test_vllm_direct_swap_serves_the_exported_checkpoints_weights(vllm_backend, demo_family, tmp_path):
    _check_direct_swap_serves_the_export(vllm_backend, demo_family, tmp_path)


@pytest.mark.vllm
def test_vllm_direct_swap_on_a_crew_of_threads(demo_family, tmp_path, monkeypatch):
    """An engine bound to two cores writes a swap on two pinned threads, layers shared out (engine.backends.crew):
    still the weights vLLM's own loader serves."""
    import os

    from engine.backends.vllm_backend import VLLMBackend, vllm_available

    if not vllm_available():
        pytest.skip("vllm does not import in this environment")
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", f"{cpus[0]},{cpus[1]}")
    backend = VLLMBackend(demo_family.general)
    try:
        _check_direct_swap_serves_the_export(backend, demo_family, tmp_path)
        assert backend.swap_detail["workers"] == 2 and "2 threads" in backend.swap_reason, backend.swap_reason
    finally:
        backend.close()


def test_transformers_resident_swap_matches_streaming(demo_family):
    backend = make_backend(demo_family.general, kind="transformers")
    try:
        # The machine's choice (float32 on a CPU without native bf16, bfloat16 on a bf16-capable CPU or a GPU).
        assert backend.dtype == serving_dtype(None, demo_family.general, device=backend.device.type)
        general, resident, streamed = _replies_both_paths(backend, demo_family)
        assert resident == streamed and resident != general
        assert backend.describe()["swap_path"] == "streaming"
    finally:
        backend.close()
