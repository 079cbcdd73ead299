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


def test_layers_group_a_modules_parameters_and_join_tied_modules():
    from engine.backends.served import served_layers, served_targets

    model = torch.nn.Module()
    model.embed = torch.nn.Embedding(10, 4)
    model.proj = torch.nn.Linear(4, 4)
    model.head = torch.nn.Linear(4, 10, bias=False)
    model.head.weight = model.embed.weight  # tied: one served parameter, two owners
    layers = served_layers(served_targets(model))
    names = [[t.name for t in layer.targets] for layer in layers]
    assert names == [["embed.weight"], ["proj.weight", "proj.bias"]]
    assert layers[0].modules == [model.embed, model.head]  # both re-processed once the tied weight is in
    assert layers[1].numel == 4 * 4 + 4 and layers[1].staging_bytes == 0  # nothing packed


def test_a_parameter_shared_late_joins_two_groups():
    from engine.backends.served import served_layers, served_targets

    model = torch.nn.Module()
    model.a = torch.nn.Linear(3, 3, bias=False)
    model.b = torch.nn.Linear(3, 3, bias=False)
    model.a.extra = model.b.extra = torch.nn.Parameter(torch.zeros(3))  # a's and b's, one parameter
    by_name = {t.name: t for t in served_targets(model)}
    # In this order a and b get groups of their own before the shared parameter joins them.
    layers = served_layers([by_name["a.weight"], by_name["b.weight"], by_name["a.extra"]])
    assert len(layers) == 1 and layers[0].modules == [model.a, model.b]
    assert [t.name for t in layers[0].targets] == ["a.weight", "b.weight", "a.extra"]
