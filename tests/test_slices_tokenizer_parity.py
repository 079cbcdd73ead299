"""Parity with mergekit 0.1.5 for `slices:` (stacking, per-slice parameters and gradients, slice bases),
`passthrough` (single-model copy, `scale` filters), every tokenizer setting over differing vocabularies, and the
named chat templates: the same YAML through mergekit and `mergescope merge`, outputs compared.

Token-indexed tensors are compared by token string (mergekit orders a union's added tokens by a set's iteration
order, so ids may differ between its runs); everything else tensor by tensor (max relative difference 1e-5; the
float16/bfloat16 slices configs within one rounding step). A random method over slices runs with mergekit's seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("mergekit")

from engine.checkpoint import open_checkpoint  # noqa: E402
from engine.cli import main as cli_main  # noqa: E402
from engine.synthetic import llama_config, write_family, write_family_member  # noqa: E402
from tests.mergekit_oracle import SEED, run_mergekit  # noqa: E402

SLICES = {
    "stack_passthrough": """
merge_method: passthrough
slices:
  - sources: [{model: A, layer_range: [0, 2]}]
  - sources:
      - model: B
        layer_range: [1, 3]
        parameters:
          scale: [{filter: o_proj, value: 0.0}, {filter: down_proj, value: [0.5, 2.0]}, {value: 1.0}]
""",
    "stack_linear_gradients": """
merge_method: linear
slices:
  - sources:
      - {model: A, layer_range: [0, 2], parameters: {weight: [0.2, 0.9]}}
      - {model: B, layer_range: [1, 3]}
    parameters: {weight: 0.5}
  - sources:
      - {model: B, layer_range: [2, 3], parameters: {weight: 0.3}}
      - {model: C, layer_range: [0, 1], parameters: {weight: 0.7}}
parameters: {normalize: true}
""",
    "slice_base_slerp": """
merge_method: slerp
base_model: BASE
slices:
  - sources:
      - {model: BASE, layer_range: [0, 3]}
      - {model: A, layer_range: [0, 3]}
    parameters:
      t: [{filter: self_attn, value: [0, 0.5, 1]}, {value: 0.3}]
  - sources:
      - {model: B, layer_range: [1, 2]}
      - {model: C, layer_range: [2, 3]}
    base_model: C
    parameters: {t: 0.8}
""",
    "slices_ties": """
merge_method: ties
base_model: BASE
slices:
  - sources:
      - {model: BASE, layer_range: [0, 2]}
      - {model: A, layer_range: [0, 2], parameters: {weight: 0.7, density: 0.4}}
      - {model: B, layer_range: [0, 2], parameters: {weight: [0.2, 0.6], density: 0.8}}
  - sources:
      - {model: BASE, layer_range: [1, 3]}
      - {model: C, layer_range: [1, 3], parameters: {weight: 1.0, density: 0.5}}
""",
    "passthrough_single_scaled": """
merge_method: passthrough
models:
  - model: A
    parameters:
      scale: [{filter: mlp, value: 0.25}, {value: 1.0}]
""",
    # A random method over slices: the masks are drawn in mergekit's order (by the largest input tensor name; no
    # two outputs here share one), from its seed.
    "slices_dare_ties": """
merge_method: dare_ties
base_model: BASE
slices:
  - sources:
      - {model: BASE, layer_range: [0, 2]}
      - {model: A, layer_range: [0, 2], parameters: {weight: 0.7, density: 0.4}}
      - {model: B, layer_range: [1, 3], parameters: {weight: [0.2, 0.6], density: 0.8}}
  - sources:
      - {model: BASE, layer_range: [0, 1]}
      - {model: C, layer_range: [0, 1], parameters: {weight: 1.0, density: 0.5}}
""",
}
# Every slices config again in half precision (mergekit computes in `dtype`): within one rounding step.
HALF_DTYPES = ("float16", "bfloat16")
SLICES.update({
    f"{name}_{dtype}": text + f"dtype: {dtype}\n" for name, text in list(SLICES.items()) for dtype in HALF_DTYPES
})  # fmt: skip

# Differing vocabularies: VB 96 tokens, VA 99 (3 characters VB lacks), VC 90 characters + 2 tokens of its own.
TOKENIZERS = {
    "tok_base": """
merge_method: task_arithmetic
base_model: VB
models:
  - {model: VA, parameters: {weight: 0.6}}
  - {model: VC, parameters: {weight: 0.4}}
tokenizer_source: base
""",
    "tok_union": """
merge_method: task_arithmetic
base_model: VB
models:
  - {model: VA, parameters: {weight: 0.6}}
  - {model: VC, parameters: {weight: 0.4}}
tokenizer_source: union
""",
    "tok_model": """
merge_method: linear
models:
  - {model: VA, parameters: {weight: 0.5}}
  - {model: VC, parameters: {weight: 0.5}}
tokenizer_source: VA
""",
    "tok_block": """
merge_method: ties
base_model: VB
models:
  - {model: VA, parameters: {weight: 0.6, density: 0.5}}
  - {model: VC, parameters: {weight: 0.4, density: 0.7}}
tokenizer:
  source: union
  pad_to_multiple_of: 64
  tokens:
    "a": {source: {kind: model_token, model: VA, token: "b"}, force: true}
    "<new>": {source: {kind: zero}}
    "<c1>": {source: {kind: model_token, model: VB, token_id: 5}}
    "<c2>": {source: VC}
""",
    "tok_slices_union": """
merge_method: passthrough
slices:
  - sources: [{model: VA, layer_range: [0, 2]}]
  - sources: [{model: VC, layer_range: [1, 3]}]
tokenizer_source: union
""",
}

TEMPLATES = {
    name: f"merge_method: linear\nmodels:\n  - {{model: A, parameters: {{weight: 0.5}}}}\n"
    f"  - {{model: B, parameters: {{weight: 0.5}}}}\nchat_template: {name}\n"
    for name in ("chatml", "llama3", "mistral", "alpaca", "exaone", "auto")
}

CONVERSATIONS = [
    [{"role": "user", "content": " hi there "}],
    [
        {"role": "system", "content": " be brief "},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": " 4 "},
        {"role": "user", "content": "and 3+3?"},
    ],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
]


def _substitute(text: str, paths: dict[str, Path]) -> str:
    for key, path in sorted(paths.items(), key=lambda kv: -len(kv[0])):
        for field in ("model: ", "base_model: ", "tokenizer_source: ", "source: "):
            text = text.replace(f"{field}{key}\n", f"{field}{path}\n")
            text = text.replace(f"{field}{key},", f"{field}{path},").replace(f"{field}{key}}}", f"{field}{path}}}")
    return text


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> dict[str, tuple[Path, Path, str | None]]:
    root = tmp_path_factory.mktemp("slices-parity")
    config = llama_config(num_hidden_layers=3)
    family = write_family(root / "family", config, ("base", "a", "b", "c"), delta_scale=0.5)
    paths = {"BASE": family["base"], "A": family["a"], "B": family["b"], "C": family["c"]}
    for key, vocab, extra, variant in (("VB", 96, (), 0), ("VA", 99, (), 1), ("VC", 92, ("<c1>", "<c2>"), 2)):
        paths[key] = write_family_member(
            root / key, llama_config(num_hidden_layers=3, vocab_size=vocab), variant=variant, delta_scale=0.5,
            extra_tokens=extra,
        )  # fmt: skip
    jobs, result = [], {}
    for name, text in {**SLICES, **TOKENIZERS, **TEMPLATES}.items():
        yml = root / f"{name}.yml"
        yml.write_text(_substitute(text, paths))
        ours, theirs = root / f"ours-{name}", root / f"mergekit-{name}"
        assert cli_main(["merge", str(yml), "--out", str(ours), "--quiet", "--seed", str(SEED)]) == 0, name
        jobs.append((yml, theirs, name in TEMPLATES))
        result[name] = (ours, theirs)
    errors = run_mergekit(jobs)
    return {name: (ours, theirs, errors[str(theirs)]) for name, (ours, theirs) in result.items()}


def _rel(x: torch.Tensor, y: torch.Tensor) -> float:
    return ((x - y).abs().max() / y.abs().max().clamp(min=1e-12)).item()


def _compare_plain(ours: Path, theirs: Path, skip=(), half: torch.dtype | None = None) -> int:
    """Tensor by tensor: float32 within 1e-5 (max relative difference); `half`: every element within one rounding
    step of that dtype, and the output written in it."""
    a, b = open_checkpoint(ours), open_checkpoint(theirs)
    assert sorted(a.tensor_names()) == sorted(b.tensor_names())
    checked = 0
    for name in b.tensor_names():
        if name in skip:
            continue
        assert a.info(name).dtype == b.info(name).dtype, name
        x, y = a.get(name).float(), b.get(name).float()
        assert x.shape == y.shape, name
        if half is None:
            assert _rel(x, y) <= 1e-5, f"{name} differs from mergekit ({_rel(x, y):.2e})"
        else:
            info = torch.finfo(half)
            worst = ((x - y).abs() / (info.eps * y.abs().clamp(min=info.tiny))).max().item()
            assert worst <= 1.0, f"{name} is {worst:.1f} rounding steps from mergekit's"
        checked += 1
    return checked


@pytest.mark.parametrize("case", sorted(SLICES))
def test_slices_match_mergekit(outputs, case):
    ours, theirs, error = outputs[case]
    assert error is None, error
    dtype = case.rsplit("_", 1)[-1]  # (not endswith: "bfloat16" ends with "float16")
    half = getattr(torch, dtype) if dtype in HALF_DTYPES else None
    assert _compare_plain(ours, theirs, half=half) > 0
    cfg_ours = json.loads((ours / "config.json").read_text())
    cfg_theirs = json.loads((theirs / "config.json").read_text())
    assert cfg_ours["num_hidden_layers"] == cfg_theirs["num_hidden_layers"]
    layers = {n.split(".")[2] for n in open_checkpoint(ours).tensor_names() if n.startswith("model.layers.")}
    assert len(layers) == cfg_ours["num_hidden_layers"]  # nothing outside the slices is written


def test_stacking_renumbers_and_scales(outputs):
    """Output layer 2 is B's layer 1 (renumbered), with the scale filters applied."""
    ours = open_checkpoint(outputs["stack_passthrough"][0])
    b = open_checkpoint(outputs["stack_passthrough"][0].parent / "family" / "b")
    assert json.loads((outputs["stack_passthrough"][0] / "config.json").read_text())["num_hidden_layers"] == 4
    assert torch.equal(ours.get("model.layers.2.mlp.up_proj.weight"), b.get("model.layers.1.mlp.up_proj.weight"))
    assert not ours.get("model.layers.3.self_attn.o_proj.weight").any()
    # down_proj scale gradient 0.5 -> 2.0 over the slice's two layers
    assert torch.allclose(ours.get("model.layers.3.mlp.down_proj.weight"), 2 * b.get("model.layers.2.mlp.down_proj.weight"))


def _vocab(folder: Path) -> dict[str, int]:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder)).get_vocab()


@pytest.mark.parametrize("case", sorted(TOKENIZERS))
def test_tokenizer_settings_match_mergekit(outputs, case):
    ours, theirs, error = outputs[case]
    assert error is None, error
    vocab_names = ("model.embed_tokens.weight", "lm_head.weight")
    _compare_plain(ours, theirs, skip=vocab_names)
    va, vb = _vocab(ours), _vocab(theirs)
    assert set(va) == set(vb)
    size = json.loads((ours / "config.json").read_text())["vocab_size"]
    assert size == json.loads((theirs / "config.json").read_text())["vocab_size"]
    a, b = open_checkpoint(ours), open_checkpoint(theirs)
    for name in vocab_names:
        x, y = a.get(name).float(), b.get(name).float()
        assert x.shape == y.shape == (size, x.shape[1]), name
        ids_a = torch.tensor([va[t] for t in sorted(va)])
        ids_b = torch.tensor([vb[t] for t in sorted(va)])
        assert _rel(x[ids_a], y[ids_b]) <= 1e-5, f"{name}: rows differ from mergekit by token"
        if size > len(va):  # padding rows
            assert _rel(x[len(va):], y[len(vb):]) <= 1e-5


def test_union_vocabulary_and_fills(outputs):
    ours = outputs["tok_block"][0]
    vocab = _vocab(ours)
    assert {"<c1>", "<c2>", "<new>", "~"} <= set(vocab)  # VC's own tokens, a configured one, VA's extra chars
    embed = open_checkpoint(ours).get("model.embed_tokens.weight")
    assert embed.shape[0] == 128 and json.loads((ours / "config.json").read_text())["vocab_size"] == 128
    assert not embed[vocab["<new>"]].any()  # {kind: zero} in every model stays zero after merging


def test_differing_vocab_without_setting_is_refused(tmp_path, capsys):
    va = write_family_member(tmp_path / "va", llama_config(vocab_size=99), variant=1)
    vb = write_family_member(tmp_path / "vb", llama_config(vocab_size=96))
    yml = tmp_path / "c.yml"
    yml.write_text(f"merge_method: linear\nmodels:\n  - {{model: {va}, parameters: {{weight: 1}}}}\n"
                   f"  - {{model: {vb}, parameters: {{weight: 1}}}}\n")  # fmt: skip
    assert cli_main(["merge", str(yml), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "vocab size differs" in err and "tokenizer_source: union" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_named_chat_templates_render_as_mergekit(outputs, name):
    from transformers import AutoTokenizer

    ours, theirs, error = outputs[name]
    assert error is None, error
    tok_a, tok_b = AutoTokenizer.from_pretrained(str(ours)), AutoTokenizer.from_pretrained(str(theirs))
    for conv in CONVERSATIONS:
        for gen in (True, False):
            a = tok_a.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen)
            b = tok_b.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen)
            if name == "exaone":
                # mergekit's exaone file leaks its own indentation into every prompt; ours renders the format
                # without it: the same text once whitespace is set aside.
                assert "".join(a.split()) == "".join(b.split()), f"{a!r} vs {b!r}"
            else:
                assert a == b, f"{name}: {a!r} != {b!r}"
    if name == "exaone":
        assert tok_a.apply_chat_template(CONVERSATIONS[0], tokenize=False, add_generation_prompt=True) == (
            "[|system|][|endofturn|]\n[|user|] hi there \n[|assistant|]"
        )


@pytest.mark.parametrize("vocab", [99, pytest.param(128, marks=pytest.mark.slow)])
def test_sweep_variant_yaml_reproduces_in_mergekit(tmp_path, vocab):
    """A sweep variant (ptm_config) names the general model's tokenizer and chat template, so mergekit run on
    the exported YAML gives the same tensors, vocabulary and prompt format as our export. With 128 rows for 99
    tokens (a padded embedding) `tokenizer_source` is left out: mergekit would cut the padding rows."""
    from transformers import AutoTokenizer

    from engine.config import ptm_config
    from engine.export import export_merge
    from engine.synthetic import CHAT_TEMPLATE

    family = write_family(tmp_path / "f", llama_config(vocab_size=vocab), ("base", "general", "skill"), delta_scale=0.5)
    # The base speaks another template: mergekit's default (the base's) would be wrong for the variant.
    tok_cfg = family["base"] / "tokenizer_config.json"
    tok_cfg.write_text(tok_cfg.read_text().replace("<|assistant|>", "<|bot|>"))
    config = ptm_config(family["base"], family["general"], {str(family["skill"]): 0.4})
    assert config.tokenizer_source == (str(family["general"]) if vocab == 99 else None)
    assert config.chat_template == CHAT_TEMPLATE
    ours = export_merge(config, tmp_path / "ours")
    yml = tmp_path / "variant.yml"
    yml.write_text((ours / "mergekit_config.yml").read_text())
    theirs = tmp_path / "theirs"
    assert run_mergekit([(yml, theirs, True)])[str(theirs)] is None
    assert _compare_plain(ours, theirs) == len(open_checkpoint(theirs).tensor_names())
    tok_a, tok_b = AutoTokenizer.from_pretrained(str(ours)), AutoTokenizer.from_pretrained(str(theirs))
    assert tok_a.get_vocab() == tok_b.get_vocab()
    conv = CONVERSATIONS[1]
    rendered = tok_a.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
    assert rendered == tok_b.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
    assert rendered.endswith("<|assistant|>")


def test_tied_embeddings_stay_tied_when_aligned(tmp_path):
    """A tied model (no lm_head) aligned over differing vocabularies keeps one embedding matrix, sized to the
    output vocabulary (mergekit 0.1.5 writes an untied lm_head copy instead)."""
    va = write_family_member(tmp_path / "va", llama_config(vocab_size=99, tie_word_embeddings=True), variant=1)
    vb = write_family_member(tmp_path / "vb", llama_config(vocab_size=96, tie_word_embeddings=True))
    yml = tmp_path / "c.yml"
    yml.write_text(f"merge_method: linear\nmodels:\n  - {{model: {va}, parameters: {{weight: 1}}}}\n"
                   f"  - {{model: {vb}, parameters: {{weight: 1}}}}\ntokenizer_source: base\n")  # fmt: skip
    out = tmp_path / "out"
    assert cli_main(["merge", str(yml), "--out", str(out), "--quiet"]) == 0
    ckpt = open_checkpoint(out)
    config = json.loads((out / "config.json").read_text())
    assert "lm_head.weight" not in ckpt.tensor_names() and config["tie_word_embeddings"] is True
    assert ckpt.info("model.embed_tokens.weight").shape[0] == config["vocab_size"] == len(_vocab(out))


def _resave_sorted(folder: Path) -> None:
    """Rewrite a checkpoint as `save_pretrained` does: the header sorted, so lm_head is listed before the layers."""
    from safetensors.torch import load_file, save_file

    for file in folder.glob("*.safetensors"):
        save_file(load_file(file), file, metadata={"format": "pt"})


def test_head_from_a_later_slice_matches_mergekit(tmp_path):
    """The final norm and lm_head come from the last slice's sources, whatever the file order, even when the first
    slice's model is tied (has no lm_head): mergekit's tensors, and config.json unties so loaders keep the head."""
    tied = write_family_member(tmp_path / "t", llama_config(num_hidden_layers=3, tie_word_embeddings=True), variant=1)
    b = write_family_member(tmp_path / "b", llama_config(num_hidden_layers=3), variant=2)
    _resave_sorted(b)
    assert open_checkpoint(b).tensor_names()[0] == "lm_head.weight"
    yml = tmp_path / "c.yml"
    yml.write_text(f"merge_method: passthrough\nslices:\n  - sources: [{{model: {tied}, layer_range: [0, 2]}}]\n"
                   f"  - sources: [{{model: {b}, layer_range: [1, 3]}}]\n")  # fmt: skip
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    assert cli_main(["merge", str(yml), "--out", str(ours), "--quiet"]) == 0
    assert run_mergekit([(yml, theirs, False)])[str(theirs)] is None
    assert _compare_plain(ours, theirs) == len(open_checkpoint(theirs).tensor_names())
    assert torch.equal(open_checkpoint(ours).get("lm_head.weight"), open_checkpoint(b).get("lm_head.weight"))
    assert json.loads((ours / "config.json").read_text())["tie_word_embeddings"] is False


def test_a_tensor_slices_leave_out_is_named(tmp_path, capsys):
    """The first slice's lm_head has no place when the last slice's model is tied: mergekit drops it silently,
    we write the same tensors and say which one was left out."""
    a = write_family_member(tmp_path / "a", llama_config(num_hidden_layers=2), variant=1)
    tied = write_family_member(tmp_path / "t", llama_config(num_hidden_layers=2, tie_word_embeddings=True), variant=2)
    yml = tmp_path / "c.yml"
    yml.write_text(f"merge_method: passthrough\nslices:\n  - sources: [{{model: {a}, layer_range: [0, 1]}}]\n"
                   f"  - sources: [{{model: {tied}, layer_range: [1, 2]}}]\n")  # fmt: skip
    assert cli_main(["merge", str(yml), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert f"warning: tensor lm_head.weight of {a} is not written" in err, err
    assert "lm_head.weight" not in open_checkpoint(tmp_path / "out").tensor_names()
