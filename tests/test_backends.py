"""Serving backends on the demo family: in-place swaps really change the served weights, and back.

The vLLM tests share the session's one engine (`vllm_backend` fixture); the transformers backend is cheap
enough to start per module.
"""

from __future__ import annotations

import shutil

import pytest

from engine.backends import GenerationSettings, make_backend, variant_key
from engine.backends.base import START_KEY, per_prompt_settings
from engine.errors import BackendError
from engine.sweep import checkpoint_config

GREEDY = GenerationSettings(max_tokens=16, temperature=0.0)


def _prompts(family, n: int = 6) -> list[list[dict[str, str]]]:
    """Real prompts from the demo family's own suites."""
    from evals import load_suites

    prompts: list[list[dict[str, str]]] = []
    for suite in load_suites([str(p) for p in family.suites]):
        prompts += suite.prompts()[:2]
    return prompts[:n]


def _ptm(family, omega: float):
    from engine.config import ptm_config

    skill = next(iter(family.skills.values()))
    return ptm_config(str(family.base), str(family.general), {str(skill): omega})


# --- pure parts ------------------------------------------------------------------------------------------------
def test_generation_settings_validate_and_map():
    with pytest.raises(BackendError, match="max_tokens"):
        GenerationSettings(max_tokens=0)
    with pytest.raises(BackendError, match="top_p"):
        GenerationSettings(top_p=0.0)
    with pytest.raises(BackendError, match="suite x generation.*tempreature"):
        GenerationSettings.from_mapping({"tempreature": 0.5}, where="suite x generation")
    s = GenerationSettings.from_mapping({"max_tokens": 8, "temperature": 0.7})
    assert (s.max_tokens, s.temperature, s.top_p) == (8, 0.7, 1.0)
    assert per_prompt_settings(s, 3) == [s, s, s]
    with pytest.raises(BackendError, match="2 generation settings for 3 prompts"):
        per_prompt_settings([s, s], 3)


def test_unknown_backend_kind_is_an_error(demo_family):
    with pytest.raises(BackendError, match="unknown backend 'tgi'"):
        make_backend(demo_family.general, kind="tgi")


def test_variant_key_is_stable_and_distinguishes(demo_family):
    assert variant_key(None) == START_KEY
    assert variant_key(_ptm(demo_family, 0.3)) == variant_key(_ptm(demo_family, 0.3))
    assert variant_key(_ptm(demo_family, 0.3)) != variant_key(_ptm(demo_family, 0.4))


# --- vLLM --------------------------------------------------------------------------------------------------------
@pytest.mark.vllm
def test_vllm_swap_changes_weights_and_omega_zero_restores_general(vllm_backend, demo_family):
    prompts = _prompts(demo_family)
    general = vllm_backend.generate(None, prompts, GREEDY)
    assert len(general) == len(prompts) and any(general)

    swaps = vllm_backend.swaps
    at_zero = vllm_backend.generate(_ptm(demo_family, 0.0), prompts, GREEDY)
    assert at_zero == general  # θ_G + 0·τ is θ_G: the same greedy replies
    assert vllm_backend.swaps == swaps + 1  # and it really went through a swap

    at_one = vllm_backend.generate(_ptm(demo_family, 1.0), prompts, GREEDY)
    assert at_one != general  # the skill vector really reached the served weights
    assert vllm_backend.last_timings["swap_s"] > 0

    again = vllm_backend.generate(_ptm(demo_family, 0.0), prompts, GREEDY)
    assert again == general  # swapping back restores the general model exactly

    # Same variant twice: no second swap.
    swaps = vllm_backend.swaps
    vllm_backend.generate(_ptm(demo_family, 0.0), prompts[:1], GREEDY)
    assert vllm_backend.swaps == swaps and vllm_backend.last_timings["swap_s"] == 0.0


@pytest.mark.vllm
def test_vllm_reference_checkpoint_loads_as_is(vllm_backend, demo_family):
    prompts = _prompts(demo_family)
    general = vllm_backend.generate(None, prompts, GREEDY)
    skill_path = next(iter(demo_family.skills.values()))
    skill = vllm_backend.generate(checkpoint_config(skill_path), prompts, GREEDY)
    assert skill != general
    # The general checkpoint read from disk through the same path serves the start model's replies.
    assert vllm_backend.generate(checkpoint_config(demo_family.general), prompts, GREEDY) == general


def _check_per_prompt_settings(backend, family) -> None:
    prompts = _prompts(family)
    one, many = GenerationSettings(max_tokens=1), GenerationSettings(max_tokens=12)
    settings = [one if i % 2 else many for i in range(len(prompts))]
    batched = backend.generate(None, prompts, settings)
    alone = [backend.generate(None, [p], s)[0] for p, s in zip(prompts, settings, strict=True)]
    assert batched == alone  # each prompt got its own settings inside the one batched call
    long_of_short = backend.generate(None, prompts[1::2], many)
    assert any(len(b) < len(lo) for b, lo in zip(batched[1::2], long_of_short, strict=True))


@pytest.mark.vllm
def test_vllm_per_prompt_settings_in_one_batch(vllm_backend, demo_family):
    _check_per_prompt_settings(vllm_backend, demo_family)
    sampled = GenerationSettings(max_tokens=12, temperature=1.0, seed=7)
    prompt = _prompts(demo_family, 1)[0]
    assert vllm_backend.generate(None, [prompt], sampled) == vllm_backend.generate(None, [prompt], sampled)


@pytest.mark.vllm
def test_vllm_stream_is_cumulative_and_matches_generate(vllm_backend, demo_family):
    prompt = _prompts(demo_family, 1)[0]
    variant = _ptm(demo_family, 0.5)
    whole = vllm_backend.generate(variant, [prompt], GREEDY)[0]
    chunks = list(vllm_backend.stream(variant, prompt, GREEDY))
    assert chunks[-1] == whole
    assert len(chunks) > 1  # token by token, not one final piece
    assert all(later.startswith(earlier) for earlier, later in zip(chunks, chunks[1:], strict=False))
    # A consumer that stops early leaves the engine idle and usable.
    stream = vllm_backend.stream(None, prompt, GenerationSettings(max_tokens=32))
    next(stream)
    stream.close()
    assert not vllm_backend.llm.llm_engine.has_unfinished_requests()
    assert vllm_backend.generate(variant, [prompt], GREEDY)[0] == whole


def _damaged_skill(family, tmp_path, damage: str):
    """A copy of the first skill with one tensor damaged: truncated (caught before the swap starts) or with a NaN
    in the last tensor (caught mid-swap, after the reload began)."""
    from safetensors.torch import load_file, save_file

    copy = shutil.copytree(next(iter(family.skills.values())), tmp_path / f"{damage}-skill")
    file = sorted(copy.glob("*.safetensors"))[-1]
    tensors = load_file(file)
    name = sorted(tensors)[-1] if damage == "nan" else sorted(tensors)[0]
    if damage == "nan":
        tensors[name] = tensors[name].clone()
        tensors[name].view(-1)[0] = float("nan")
    else:
        tensors[name] = tensors[name].reshape(-1)[:-1].clone()
    save_file(tensors, file, metadata={"format": "pt"})
    return copy, name


@pytest.mark.vllm
@pytest.mark.parametrize("damage", ["shape", "nan"])
def test_vllm_failed_swap_is_a_clear_error_and_recovers(vllm_backend, demo_family, tmp_path, damage):
    from engine.config import ptm_config

    prompts = _prompts(demo_family, 2)
    general = vllm_backend.generate(None, prompts, GREEDY)
    at_one = vllm_backend.generate(_ptm(demo_family, 1.0), prompts, GREEDY)
    broken, tensor = _damaged_skill(demo_family, tmp_path, damage)
    bad = ptm_config(str(demo_family.base), str(demo_family.general), {str(broken): 0.5})
    with pytest.raises(BackendError) as failure:
        vllm_backend.generate(bad, prompts, GREEDY)
    assert tensor in str(failure.value) and str(broken) in str(failure.value)  # names tensor and file
    # The engine survives, even a swap that failed half way; the next calls reload in full.
    assert vllm_backend.generate(None, prompts, GREEDY) == general
    assert vllm_backend.generate(_ptm(demo_family, 1.0), prompts, GREEDY) == at_one


@pytest.mark.vllm
def test_vllm_swap_resets_prefix_cache_and_waits_for_a_running_stream(vllm_backend, demo_family, monkeypatch):
    """No reply mixes two variants: a swap waits until the running stream ends, then resets the prefix cache."""
    import threading

    prompt = _prompts(demo_family, 1)[0]
    long = GenerationSettings(max_tokens=24)
    general = vllm_backend.generate(None, [prompt], long)[0]
    variant = _ptm(demo_family, 1.0)
    resets = []
    original = vllm_backend.llm.reset_prefix_cache
    monkeypatch.setattr(vllm_backend.llm, "reset_prefix_cache", lambda *a, **k: (resets.append(1), original())[1])

    stream = vllm_backend.stream(None, prompt, long)
    chunks = [next(stream)]  # the stream now holds the backend
    other: list[str] = []
    swapper = threading.Thread(target=lambda: other.extend(vllm_backend.generate(variant, [prompt], long)))
    swapper.start()
    swapper.join(timeout=2.0)
    assert swapper.is_alive() and not resets  # the swap waits for the stream
    chunks += list(stream)
    swapper.join()
    assert chunks[-1] == general  # the stream finished on the weights it started on
    assert len(resets) == 1 and other == vllm_backend.generate(variant, [prompt], long)


# --- transformers --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hf_backend(demo_family):
    backend = make_backend(demo_family.general, kind="transformers")
    yield backend
    backend.close()


def test_transformers_swap_and_back(hf_backend, demo_family):
    assert hf_backend.kind == "transformers"
    prompts = _prompts(demo_family)
    general = hf_backend.generate(None, prompts, GREEDY)
    assert hf_backend.generate(_ptm(demo_family, 0.0), prompts, GREEDY) == general
    assert hf_backend.generate(_ptm(demo_family, 1.0), prompts, GREEDY) != general
    assert hf_backend.generate(None, prompts, GREEDY) == general


def test_transformers_stream_matches_generate(hf_backend, demo_family):
    prompt = _prompts(demo_family, 1)[0]
    whole = hf_backend.generate(None, [prompt], GREEDY)[0]
    chunks = list(hf_backend.stream(None, prompt, GREEDY))
    assert chunks and chunks[-1].strip() == whole.strip()
    _check_per_prompt_settings(hf_backend, demo_family)


def test_stream_may_finish_on_another_thread(hf_backend, demo_family):
    """Web servers resume generators on pool threads: the backend lock must not be tied to one thread."""
    from concurrent.futures import ThreadPoolExecutor

    prompt = _prompts(demo_family, 1)[0]
    whole = hf_backend.generate(None, [prompt], GREEDY)[0]
    stream = hf_backend.stream(None, prompt, GREEDY)
    with ThreadPoolExecutor(max_workers=1) as first, ThreadPoolExecutor(max_workers=1) as second:
        chunks = [first.submit(next, stream).result()]
        chunks += second.submit(list, stream).result()
    assert chunks[-1].strip() == whole.strip()
    # The lock was released by the second thread: the backend serves again.
    assert hf_backend.generate(None, [prompt], GREEDY) == [whole]
