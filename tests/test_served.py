"""The direct swap's fused pass (`engine.backends.served.write_merged`): the method's own arithmetic over row
chunks gives the bits of the whole-tensor merge, in the served dtype; an overflow is a named error. The engine
side (vLLM's served layout, packed CPU weights) is tested against a real engine in test_resident_swap.py."""

from __future__ import annotations

import pytest
import torch

from engine.backends.served import CHUNK_ELEMENTS, write_merged
from engine.errors import MergeError
from engine.methods import METHODS

PTM = ([{"weight": 1.0, "density": 1.0}, {"weight": 0.37, "density": 1.0}], {"lambda": 1.0, "normalize": False})


def _combine(name: str, model_params, params):
    fn = METHODS[name].fn
    return lambda base, xs: fn(base, xs, model_params, params, None)


@pytest.mark.parametrize("served", [torch.float32, torch.bfloat16])
def test_chunked_write_is_the_whole_tensor_merge(served):
    generator = torch.Generator().manual_seed(0)
    numel = CHUNK_ELEMENTS["cpu"] * 2 + 12345  # a last chunk of another size
    base, general, skill = (torch.randn(numel, generator=generator) for _ in range(3))
    combine = _combine("task_arithmetic", *PTM)
    expected = combine(base, [general, skill]).to(torch.float32).to(served)
    dest = torch.full((numel,), float("nan"), dtype=served)
    write_merged(dest, base, [general, skill], combine, (torch.float32, served), "w")
    assert torch.equal(dest.view(torch.int16 if served == torch.bfloat16 else torch.int32),
                       expected.view(torch.int16 if served == torch.bfloat16 else torch.int32))  # fmt: skip
    assert not torch.equal(dest.float(), general.to(served).float())  # the merge really moved the weights


def test_linear_without_base_and_a_2d_destination():
    a, b = torch.randn(64, 48), torch.randn(64, 48)
    combine = _combine("linear", [{"weight": 0.25}, {"weight": 0.75}], {"normalize": True})
    dest = torch.empty(64, 48)
    write_merged(dest, None, [a, b], combine, (torch.float32, torch.float32), "w")
    assert torch.equal(dest, combine(None, [a, b]))


def test_overflow_names_the_tensor():
    big = torch.full((10,), 3e38)
    combine = _combine("task_arithmetic", [{"weight": 1.0}, {"weight": 1e3}], {"lambda": 1.0})
    with pytest.raises(MergeError, match="model.layers.0.mlp.down_proj.weight"):
        write_merged(torch.empty(10), torch.zeros(10), [big, big], combine, (torch.float32,), "model.layers.0.mlp.down_proj.weight")
