"""Serving choices per machine (dtype, backend) and resident swap inputs: the pure decisions, and that a merge
from resident inputs is bit-identical to the streaming merge from disk."""

from __future__ import annotations

import os

import pytest
import torch

from engine.backends.machine import Machine, auto_backend, cpu_flags, serving_dtype
from engine.backends.resident import ResidentCheckpoint, ResidentSet, fits, resident_reason
from engine.checkpoint import open_checkpoint
from engine.config import load_config, ptm_config
from engine.errors import BackendError
from engine.merge import merge_tensors
from engine.synthetic import llama_config, write_family

AVX2_ONLY = Machine(gpu=False, cpu_flags=frozenset({"avx2", "fma", "f16c"}))
AMX_CPU = Machine(gpu=False, cpu_flags=frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16"}))
GPU_BOX = Machine(gpu=True, cpu_flags=frozenset({"avx2"}))


def test_cpu_flags_read_from_cpuinfo_text():
    text = "processor\t: 0\nflags\t\t: fpu avx2 fma avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n"
    assert cpu_flags(text) == {"fpu", "avx2", "fma", "avx512_bf16"}
    assert cpu_flags("no flags here") == frozenset()


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    root = tmp_path_factory.mktemp("resident-family")
    return write_family(root, llama_config(hidden_size=64, intermediate_size=160), names=("base", "g", "d", "e"))


def test_serving_dtype_follows_the_machine(family, tmp_path):
    ckpt = family["g"]  # a float32 checkpoint
    assert serving_dtype(None, ckpt, AVX2_ONLY) == "float32"  # emulated bf16 is slow there
    assert serving_dtype("auto", ckpt, AMX_CPU) == "bfloat16"
    assert serving_dtype(None, ckpt, GPU_BOX) == "bfloat16"
    assert serving_dtype(None, ckpt, GPU_BOX, device="cpu") == "float32"  # serving on the CPU of a GPU box
    assert serving_dtype("float16", ckpt, AVX2_ONLY) == "float16"  # the user's --dtype wins
    half = tmp_path / "half"
    half.mkdir()
    (half / "config.json").write_text('{"torch_dtype": "float16"}')
    assert serving_dtype(None, half, GPU_BOX) == "float16"  # a GPU keeps the checkpoint's own dtype
    with pytest.raises(BackendError, match="int8"):
        serving_dtype("int8", ckpt, AVX2_ONLY)


def test_auto_backend_is_vllm_only_where_a_gpu_serves():
    assert auto_backend(AVX2_ONLY) == "transformers"
    assert auto_backend(AMX_CPU) == "transformers"
    assert auto_backend(GPU_BOX) == "vllm"
    assert auto_backend(GPU_BOX, vllm_importable=False) == "transformers"
    assert auto_backend(GPU_BOX, device="cpu") == "transformers"


def test_resident_merge_is_bit_identical_to_streaming(family):
    skills = {family["d"]: 0.3, family["e"]: 0.7}
    config = ptm_config(family["base"], family["g"], skills)
    opened = {ref: open_checkpoint(ref) for ref in config.refs()}
    resident = {ref: ResidentCheckpoint(ckpt) for ref, ckpt in opened.items()}
    streamed = dict(merge_tensors(config, checkpoints=opened))
    from_memory = dict(merge_tensors(config, checkpoints=resident))
    assert list(streamed) == list(from_memory)
    for name, tensor in streamed.items():
        assert torch.equal(tensor, from_memory[name]), name
    # The merge only read the resident tensors: a second merge from them gives the same again.
    again = dict(merge_tensors(config, checkpoints=resident))
    assert all(torch.equal(again[n], t) for n, t in streamed.items())
    assert resident[str(family["g"])].identity() == opened[str(family["g"])].identity()


def test_resident_applies_only_to_linear_merges(family):
    base, g, d = (str(family[k]) for k in ("base", "g", "d"))
    opened = {ref: open_checkpoint(ref) for ref in (base, g, d)}
    assert resident_reason(ptm_config(base, g, {d: 0.5}), opened) is None
    dare = ptm_config(base, g, {d: 0.5}, method="dare_linear", parameters={"density": 0.5})
    assert "random" in resident_reason(dare, opened)
    ties = ptm_config(base, g, {d: 0.5}, method="ties", parameters={"density": 0.5})
    assert "not a linear combination" in resident_reason(ties, opened)
    linear = load_config(f"merge_method: linear\nmodels:\n  - model: {g}\n    parameters: {{weight: 0.5}}\n"
                         f"  - model: {d}\n    parameters: {{weight: 0.5}}\n")  # fmt: skip
    assert resident_reason(linear, opened) is None


def test_resident_set_reuses_fits_and_falls_back(family):
    base, g, d, e = (str(family[k]) for k in ("base", "g", "d", "e"))
    opened = {ref: open_checkpoint(ref) for ref in (base, g, d, e)}
    resident = ResidentSet("cpu")
    first = resident.for_config(ptm_config(base, g, {d: 0.2}), {r: opened[r] for r in (base, g, d)})
    assert first is not None and set(first) == {base, g, d}
    size = resident.nbytes
    assert size == 3 * sum(opened[g].info(n).nbytes for n in opened[g].tensor_names())
    again = resident.for_config(ptm_config(base, g, {d: 0.9}), {r: opened[r] for r in (base, g, d)})
    assert all(again[r] is first[r] for r in first)  # read once, reused by the next swap
    # Another skill: the one no longer named is dropped, the new one read.
    other = resident.for_config(ptm_config(base, g, {e: 0.5}), {r: opened[r] for r in (base, g, e)})
    assert set(other) == {base, g, e} and other[base] is first[base] and resident.nbytes == size
    # A re-opened (changed) checkpoint handle is read afresh.
    fresh = {**{r: opened[r] for r in (base, g)}, e: open_checkpoint(e)}
    assert resident.for_config(ptm_config(base, g, {e: 0.5}), fresh)[e] is not other[e]
    off = ResidentSet("cpu", mode="off")
    assert off.for_config(ptm_config(base, g, {d: 0.2}), {r: opened[r] for r in (base, g, d)}) is None
    assert off.last_reason == "resident swaps are off"
    assert fits(2**30, 8 * 2**30) and not fits(2**30, 2**30 + 2**29)


def test_engine_sets_a_passive_openmp_wait_policy_unless_the_user_chose_one():
    import subprocess
    import sys

    code = "import os, engine, torch; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "PASSIVE"
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ACTIVE"


def test_cpu_ranks_get_disjoint_equal_slices_of_the_cpus():
    from engine.backends.machine import cpu_rank_binding

    assert cpu_rank_binding([0, 1], 2) == "0|1"
    assert cpu_rank_binding([0, 1, 2, 3, 4], 2) == "0,1|2,3"  # the fifth is left to vLLM's scheduler process
    assert cpu_rank_binding([4, 6, 8, 10], 4) == "4|6|8|10"
    with pytest.raises(BackendError, match="at least 2 CPUs"):
        cpu_rank_binding([0], 2)


def test_engine_binding_only_for_multi_rank_cpu_engines(monkeypatch):
    from engine.backends import vllm_backend

    if vllm_backend._has_gpu():
        pytest.skip("a GPU engine places its own ranks")
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    assert vllm_backend._cpu_binding(1, 1) is None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        half = len(cpus) // 2
        expected = "|".join(",".join(map(str, cpus[i * half : (i + 1) * half])) for i in range(2))
        assert vllm_backend._cpu_binding(2, 1) == expected
    with pytest.raises(BackendError, match="--tensor-parallel-size 64 on the CPU: 64 CPU ranks need at least 64"):
        vllm_backend._cpu_binding(64, 1)
    with pytest.raises(BackendError, match="--pipeline-parallel-size 2: .*use --tensor-parallel-size"):
        vllm_backend._cpu_binding(1, 2)
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0")  # the user's own binding wins
    assert vllm_backend._cpu_binding(2, 1) is None
    # Set only while an engine starts: nothing is left in this process's environment.
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND")
    with vllm_backend._environ(VLLM_CPU_OMP_THREADS_BIND="0|1"):
        assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "0|1"
    assert "VLLM_CPU_OMP_THREADS_BIND" not in os.environ


def test_pipeline_parallel_on_a_cpu_is_refused_before_an_engine_starts(tmp_path):
    from engine.backends import vllm_backend
    from engine.demo import load_family

    if vllm_backend._has_gpu() or not vllm_backend.vllm_available():
        pytest.skip("needs a CPU-only machine with vllm")
    with pytest.raises(BackendError, match="pipeline-parallel-size 2"):
        vllm_backend.VLLMBackend(load_family().general, pipeline_parallel_size=2)
