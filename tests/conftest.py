"""Shared pytest fixtures.

`demo_family` — the embedded demo family (`engine.demo.load_family()`), session-scoped.
`vllm_backend` — ONE real vLLM engine per test session, started on the demo family's general model. Every test
that needs vLLM (mark it `@pytest.mark.vllm`) takes this fixture instead of starting its own engine: an engine
start costs ~20-40 s and ~1 GB here. Tests must not assume which variant is loaded — pass the variant you want to
`generate`/`stream` (None = the general model); the backend swaps as needed. Do not close it in a test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# Keep vLLM's KV cache small on this shared machine (GiB); must be set before the engine starts.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
# As `engine/__init__.py` sets it, but before any test module imports torch (OpenMP reads it when torch loads it).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(scope="session")
def demo_family():
    """The demo family: `.base`, `.general`, `.skills`, `.references`, `.suites`, `.dataset_sizes`."""
    try:
        from engine.demo import load_family
    except ImportError as exc:  # the family module is missing from this checkout
        pytest.skip(f"demo family unavailable: {exc}")
    return load_family()


@pytest.fixture(scope="session")
def vllm_backend(demo_family) -> Iterator:
    """The session's one vLLM backend, on the demo family's general model."""
    from engine.backends.vllm_backend import VLLMBackend, vllm_available

    if not vllm_available():
        pytest.skip("vllm does not import in this environment")
    backend = VLLMBackend(demo_family.general)
    try:
        yield backend
    finally:
        backend.close()
