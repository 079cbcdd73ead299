"""Bad `slices:` / `tokenizer:` / `chat_template:` input: a ConfigError naming the field, CLI exit 2, nothing
written; and the compatibility report of a config (`mergescope inspect --config`)."""

from __future__ import annotations

import pytest

from engine.cli import main as cli_main
from engine.config import load_config
from engine.errors import ConfigError
from engine.synthetic import llama_config, write_family

BAD = {
    "slices: [{sources: [{model: A, layer_range: [2, 1]}]}]\nmerge_method: passthrough": "layer_range",
    "slices: [{sources: [{model: A}]}]\nmerge_method: passthrough": "needs a 'layer_range'",
    "slices: [{sources: [{model: A, layer_range: [0, 1]}, {model: B, layer_range: [0, 1]}]}]\n"
    "merge_method: passthrough": "exactly one source",
    "slices: [{sources: [{model: A, layer_range: [0, 2]}, {model: B, layer_range: [0, 1]}]}]\n"
    "merge_method: linear": "same number of layers",
    "slices: [{sources: [{model: A, layer_range: [0, 1]}, {model: B, layer_range: [0, 1]}]}]\n"
    "merge_method: ties\nbase_model: C": "not among the slice's sources",
    "models: [{model: A, parameters: {weight: 1}}]\nmerge_method: linear\ntokenizer_source: base\n"
    "tokenizer: {source: union}": "either 'tokenizer_source' or 'tokenizer'",
    "models: [{model: A, parameters: {weight: 1}}]\nmerge_method: linear\n"
    "tokenizer: {tokens: {x: {source: {kind: model_token, model: A}}}}": "exactly one of 'token' or 'token_id'",
    "models: [{model: A, parameters: {weight: 1}}]\nmerge_method: linear\ntokenizer: {pad_to_multiple_of: 0}":
        "pad_to_multiple_of",
    "models: [{model: A}, {model: B}]\nmerge_method: passthrough": "exactly one model",
    "merge_method: linear\nmodules:\n  text_decoder:\n    models: [{model: A, parameters: {weight: 1}}]\n":
        "only the single 'default' module",
    "merge_method: linear\nmodules:\n  default:\n    models: [{model: A, parameters: {weight: 1}}]\n"
    "models: [{model: A, parameters: {weight: 1}}]\n": "exactly one of 'models', 'slices' or 'modules'",
}  # fmt: skip


@pytest.mark.parametrize("text", sorted(BAD))
def test_bad_config_names_the_field(text):
    with pytest.raises(ConfigError) as info:
        load_config(text)
    assert BAD[text] in str(info.value)


def test_slice_out_of_range_and_unknown_template_write_nothing(tmp_path, capsys):
    fam = write_family(tmp_path / "f", llama_config(num_hidden_layers=2), ("a",))
    cases = {
        f"merge_method: passthrough\nslices: [{{sources: [{{model: {fam['a']}, layer_range: [1, 3]}}]}}]\n":
            "outside",
        f"merge_method: passthrough\nmodels: [{{model: {fam['a']}}}]\nchat_template: chatmll\n": "chatmll",
    }  # fmt: skip
    for i, (text, needle) in enumerate(cases.items()):
        yml = tmp_path / f"{i}.yml"
        yml.write_text(text)
        assert cli_main(["merge", str(yml), "--out", str(tmp_path / f"out{i}"), "--quiet"]) == 2
        assert needle in capsys.readouterr().err
        assert not (tmp_path / f"out{i}").exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(f".out{i}")]


def test_inspect_config_understands_slices(tmp_path, capsys):
    fam = write_family(tmp_path / "f", llama_config(num_hidden_layers=3), ("a", "b"))
    fam_2 = write_family(tmp_path / "g", llama_config(num_hidden_layers=2), ("c",))
    yml = tmp_path / "s.yml"
    yml.write_text(
        "merge_method: passthrough\nslices:\n"
        f"  - sources: [{{model: {fam['a']}, layer_range: [0, 3]}}]\n"
        f"  - sources: [{{model: {fam_2['c']}, layer_range: [0, 2]}}]\n"
    )
    # Plain inspect calls 3 vs 2 layers a difference; as this config merges them they stack to 5 layers.
    assert cli_main(["inspect", str(fam["a"]), str(fam_2["c"])]) == 1
    capsys.readouterr()
    assert cli_main(["inspect", "--config", str(yml)]) == 0
    out = capsys.readouterr().out
    assert "output_layers: 5" in out and "compatible: yes" in out
    yml.write_text(yml.read_text().replace("[0, 2]", "[1, 3]"))
    assert cli_main(["inspect", "--config", str(yml)]) == 1
    assert "outside" in capsys.readouterr().out
