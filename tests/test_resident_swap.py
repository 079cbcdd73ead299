"""Resident swaps in the real engines: a sweep's checkpoints stay in engine memory, the swap says which path it
took, and the replies are exactly those of the streaming path (which itself matches a fresh engine on the
exported checkpoint: bench/sweep_bench.py checks that at every size)."""

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
    assert backend.swap_path == "resident", backend.swap_reason
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


def test_transformers_resident_swap_matches_streaming(demo_family):
    backend = make_backend(demo_family.general, kind="transformers")
    try:
        # The machine's choice (float32 on a CPU without native bf16, bfloat16 on one with it or on a GPU).
        assert backend.dtype == serving_dtype(None, demo_family.general, device=backend.device.type)
        general, resident, streamed = _replies_both_paths(backend, demo_family)
        assert resident == streamed and resident != general
        assert backend.describe()["swap_path"] == "streaming"
    finally:
        backend.close()
