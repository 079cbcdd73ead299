"""Synthetic families by size (`engine.synthetic.config_for_size`): the sizes the benchmarks ask for."""

from __future__ import annotations

import pytest

from engine.synthetic import checkpoint_bytes, config_for_size, write_family

# The sweep bench's and merge bench's sizes, from a few MB to a 7B-class checkpoint.
SIZES = ["5M", "20M", "100M", "400M", "800M", "1.6G", "3G", "8G", "30G"]


def _bytes(text: str) -> int:
    scale = {"M": 1e6, "G": 1e9}[text[-1]]
    return int(float(text[:-1]) * scale)


@pytest.mark.parametrize("size", SIZES)
def test_family_size_is_close_to_the_requested_size(size):
    requested = _bytes(size)
    config = config_for_size(requested)
    actual = checkpoint_bytes(config)
    assert abs(actual / requested - 1) < 0.02, (size, actual, config)
    hidden, layers = config["hidden_size"], config["num_hidden_layers"]
    # A Llama-like shape: embeddings at most half the weights, depth between hidden/128 and hidden/16 layers.
    assert 2 * config["vocab_size"] * hidden * 4 <= requested / 2
    assert max(2, hidden // 128) <= layers <= hidden // 16
    assert 2 * hidden <= config["intermediate_size"] <= 4 * hidden
    assert hidden % config["num_attention_heads"] == 0


def test_sizes_grow_with_the_request():
    sizes = [checkpoint_bytes(config_for_size(_bytes(s))) for s in SIZES]
    assert sizes == sorted(sizes)


def test_half_precision_halves_the_bytes_per_parameter():
    config = config_for_size(100_000_000, bytes_per_param=2)
    assert abs(checkpoint_bytes(config, 2) / 100_000_000 - 1) < 0.02


def test_below_the_ladder_gives_the_smallest_shape():
    config = config_for_size(1000)
    assert (config["vocab_size"], config["hidden_size"], config["num_hidden_layers"]) == (1024, 64, 1)


def test_a_built_family_has_the_size_and_loads(tmp_path):
    from transformers import AutoModelForCausalLM

    config = config_for_size(3_000_000)
    paths = write_family(tmp_path, config, names=("base", "skill"))
    files = list(paths["skill"].glob("*.safetensors"))
    written = sum(f.stat().st_size for f in files)
    # The files are the weights plus a small JSON header per shard.
    assert checkpoint_bytes(config) <= written < checkpoint_bytes(config) + 64_000
    model = AutoModelForCausalLM.from_pretrained(paths["skill"], use_safetensors=True)
    assert sum(p.numel() for p in model.parameters()) * 4 == checkpoint_bytes(config)
