"""`mergescope merge` end to end: a folder transformers loads as is, with the right logits; atomic writes;
bad input named and nothing left on disk; progress; the in-process `merge_tensors` stream; chunked merges."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import engine.merge as merge_module
from engine.checkpoint import open_checkpoint
from engine.cli import main as cli_main
from engine.config import load_config, ptm_config
from engine.export import export_merge
from engine.merge import merge_tensors
from engine.synthetic import (
    CHAT_TEMPLATE,
    family_tensor,
    llama_config,
    tensor_shapes,
    write_checkpoint_files,
    write_family,
)

CONFIG = llama_config()
LAST = tensor_shapes(CONFIG)[-1][0]


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    root = tmp_path_factory.mktemp("fam")
    fam = write_family(root, CONFIG, ("base", "general", "skill"), delta_scale=0.5)
    fam["sharded_skill"] = write_family(root / "sh", CONFIG, ("x", "y", "skill"), delta_scale=0.5,
                                        shard_size=60_000)["skill"]  # fmt: skip
    return fam


def ta_yaml(base, general, skill, omega=0.4, extra="") -> str:
    return (
        f"merge_method: task_arithmetic\nbase_model: {base}\nmodels:\n"
        f"  - {{model: {general}, parameters: {{weight: 1.0}}}}\n"
        f"  - {{model: {skill}, parameters: {{weight: {omega}}}}}\n{extra}"
    )


def leftovers(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name == name or p.name.startswith(f".{name}."))


def test_merged_folder_loads_in_transformers_with_reference_logits(family, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    yml = tmp_path / "ptm.yml"
    yml.write_text(ta_yaml(family["base"], family["general"], family["sharded_skill"]))
    out = tmp_path / "merged"
    assert cli_main(["merge", str(yml), "--out", str(out), "--shard-size", "100KB"]) == 0
    err = capsys.readouterr().err
    n = len(tensor_shapes(CONFIG))
    assert f"merged {n}/{n} tensors" in err and "wrote" in err
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json", "README.md", "mergekit_config.yml", "model.safetensors.index.json"} <= names  # fmt: skip
    assert len(list(out.glob("model-*.safetensors"))) > 1
    assert load_config(out / "mergekit_config.yml") == load_config(yml)
    card = (out / "README.md").read_text()
    assert "merge_method: task_arithmetic" in card and str(family["sharded_skill"]) in card
    assert json.loads((out / "tokenizer_config.json").read_text())["chat_template"] == CHAT_TEMPLATE
    assert leftovers(tmp_path, "merged") == ["merged"]

    # Reference: θ_G + 0.4 (θ_D − θ_pre) computed here from the synthetic tensors, put into the general model.
    model = AutoModelForCausalLM.from_pretrained(out)
    reference = AutoModelForCausalLM.from_pretrained(family["general"])
    state = {}
    for name, shape in tensor_shapes(CONFIG):
        base = family_tensor(name, shape, family_seed=0, variant=0, delta_scale=0.5)
        general = family_tensor(name, shape, family_seed=0, variant=1, delta_scale=0.5)
        skill = family_tensor(name, shape, family_seed=0, variant=2, delta_scale=0.5)
        state[name] = general + 0.4 * (skill - base)
    reference.load_state_dict(state)
    tokenizer = AutoTokenizer.from_pretrained(out)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                           tokenize=False)  # fmt: skip
    assert prompt == "<|user|>hi\n<|assistant|>"
    ids = torch.tensor([tokenizer.encode("hello world")])
    with torch.no_grad():
        got, want = model(ids).logits, reference(ids).logits
        general_logits = AutoModelForCausalLM.from_pretrained(family["general"])(ids).logits
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, general_logits, atol=1e-3)  # the skill really moved the model


def test_in_process_stream_touches_no_disk(family, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = ptm_config(family["base"], family["general"], {str(family["skill"]): 0.4})
    before = sorted(p for p in tmp_path.rglob("*"))
    stream = merge_tensors(config)
    first_name, first = next(stream)  # lazy: one tensor at a time
    assert first_name == "model.embed_tokens.weight" and first.dtype == torch.float32
    merged = dict([(first_name, first), *stream])
    assert list(merged) == [n for n, _ in tensor_shapes(CONFIG)]
    assert sorted(p for p in tmp_path.rglob("*")) == before
    name, shape = tensor_shapes(CONFIG)[3]
    want = family_tensor(name, shape, family_seed=0, variant=1, delta_scale=0.5) + 0.4 * (
        family_tensor(name, shape, family_seed=0, variant=2, delta_scale=0.5) - family_tensor(name, shape, family_seed=0, variant=0, delta_scale=0.5)
    )
    assert torch.allclose(merged[name], want, atol=1e-6)
    # already-opened checkpoints are reused, and the stream can be cast (bf16 for a serving engine)
    ckpts = {ref: open_checkpoint(ref) for ref in config.refs()}
    again = dict(merge_tensors(config, checkpoints=ckpts, dtype="bfloat16"))
    assert again[name].dtype == torch.bfloat16 and torch.allclose(again[name].float(), want, atol=1e-2)


def _record_chunked_merges(monkeypatch) -> list[str]:
    """Names of the tensors merged in row chunks from now on: elementwise chunks, or a method's streamed passes."""
    calls: list[str] = []
    for attr in ("chunks", "streamed"):
        real = getattr(merge_module._Job, attr)
        monkeypatch.setattr(merge_module._Job, attr, lambda self, *a, real=real: calls.append(self.name) or real(self, *a))
    return calls


@pytest.mark.parametrize(
    "yaml_text",
    [
        "merge_method: linear\nmodels:\n  - {{model: {general}, parameters: {{weight: 0.3}}}}\n"
        "  - {{model: {skill}, parameters: {{weight: [0.2, 0.9]}}}}\n",
        "merge_method: task_arithmetic\nbase_model: {base}\nmodels:\n  - {{model: {general}, parameters: {{weight: 1}}}}"
        "\n  - {{model: {skill}, parameters: {{weight: -0.7}}}}\nparameters: {{normalize: true, lambda: 0.5}}\n",
        "merge_method: ties\nbase_model: {base}\nmodels:\n  - {{model: {general}, parameters: {{weight: 1}}}}\n"
        "  - {{model: {skill}, parameters: {{weight: 0.6}}}}\n",  # density 1: sign election only, per element
        "merge_method: ties\nbase_model: {base}\nmodels:\n  - {{model: {general}, parameters: {{weight: 1}}}}\n"
        "  - {{model: {skill}, parameters: {{weight: 0.6, density: [0.2, 0.7]}}}}\nparameters: {{lambda: 0.9}}\n",
        "merge_method: breadcrumbs_ties\nbase_model: {base}\nmodels:\n  - {{model: {general}, parameters: "
        "{{weight: 1, density: 0.5}}}}\n  - {{model: {skill}, parameters: {{weight: 0.6}}}}\n",
        "merge_method: breadcrumbs\nbase_model: {base}\nmodels:\n  - {{model: {general}, parameters: "
        "{{weight: 1, density: 0.6, gamma: 0.05}}}}\n  - {{model: {skill}, parameters: {{weight: 0.6, density: 0.3}}}}\n",
        "merge_method: dare_ties\nbase_model: {base}\nmodels:\n  - {{model: {general}, parameters: "
        "{{weight: 1, density: 0.5}}}}\n  - {{model: {skill}, parameters: {{weight: 0.6, density: 0.7}}}}\n"
        "parameters: {{rescale: false}}\n",  # DARE without the rescale: no second pass, still chunked
        "merge_method: breadcrumbs\nbase_model: {base}\nmodels:\n  - {{model: {general}, parameters: "
        "{{weight: 1, density: 0.6, gamma: 0.05}}}}\nparameters: {{rescale: true}}\n",
        "merge_method: slerp\nbase_model: {base}\nmodels:\n  - {{model: {general}}}\nparameters: {{t: 0.3}}\n",
        "merge_method: model_stock\nbase_model: {base}\nmodels: [{{model: {general}}}, {{model: {skill}}}]\n",
        "merge_method: model_stock\nbase_model: {base}\nmodels: [{{model: {general}}}, {{model: {skill}}}]\n"
        "parameters: {{filter_wise: true}}\n",
    ],
)
def test_chunked_merge_equals_whole_tensor_merge(family, monkeypatch, tmp_path, yaml_text):
    config = load_config(yaml_text.format(**{k: str(v) for k, v in family.items()}))
    whole = dict(merge_tensors(config))
    monkeypatch.setattr(merge_module, "CHUNK_BYTES", 1000)  # every 2-D tensor goes in several row chunks
    monkeypatch.setattr(merge_module, "HALF_WHOLE_BYTES", 0)  # statistics methods too (their multi-pass form)
    calls = _record_chunked_merges(monkeypatch)
    chunked = dict(merge_tensors(config))
    assert "model.embed_tokens.weight" in calls and "model.norm.weight" not in calls
    # slerp's and Model Stock's dot products and the L1 rescale's sums (a random drop rescales by default) are
    # summed chunk by chunk: equal up to that summation order. A random drop draws the whole tensor's masks chunk
    # by chunk, each model's from where the earlier models' end: without the rescale, bit-identical.
    summed = (
        config.merge_method == "slerp"
        or (config.merge_method == "model_stock" and not config.parameters.get("filter_wise"))
        or bool(config.parameters.get("rescale"))
        or (config.method.random and config.parameters.get("rescale", True))
    )
    for name, tensor in whole.items():
        if summed:
            torch.testing.assert_close(chunked[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
        else:
            assert torch.equal(tensor, chunked[name]), name
    # the exporter writes the chunks as they come: same tensors on disk
    calls.clear()
    written = open_checkpoint(export_merge(config, tmp_path / "out"))
    assert "model.embed_tokens.weight" in calls
    for name, tensor in chunked.items():
        assert torch.equal(tensor, written.get(name)), name


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_half_precision_statistics_merges_take_large_tensors_whole(family, monkeypatch, dtype):
    """A method with whole-tensor statistics streams a large float32 tensor in row chunks (float64 sums, a few
    chunks of memory) but merges a half-precision one whole, where only the whole computation has mergekit's
    roundings; the elementwise task arithmetic streams either way."""
    stock = load_config(
        f"merge_method: model_stock\nbase_model: {family['base']}\ndtype: {dtype}\n"
        f"models: [{{model: {family['general']}}}, {{model: {family['skill']}}}]\n"
    )
    linear = load_config(ta_yaml(family["base"], family["general"], family["skill"], extra=f"dtype: {dtype}\n"))
    monkeypatch.setattr(merge_module, "CHUNK_BYTES", 1000)  # every 2-D tensor counts as large
    calls = _record_chunked_merges(monkeypatch)
    merged = dict(merge_tensors(stock))
    assert ("model.embed_tokens.weight" in calls) == (dtype == "float32")
    calls.clear()
    dict(merge_tensors(linear))
    assert "model.embed_tokens.weight" in calls
    if dtype == "bfloat16":  # whole: the very tensors of the whole-tensor path
        monkeypatch.setattr(merge_module, "CHUNK_BYTES", 2**40)
        whole = dict(merge_tensors(stock))
        assert all(torch.equal(whole[n], merged[n]) for n in whole)


@pytest.mark.parametrize(("method", "extra"), [("dare_linear", ""), ("della_linear", ", epsilon: 0.1")])
def test_random_drop_in_row_chunks_keeps_density_and_one_rescale_factor(family, monkeypatch, method, extra):
    """DARE/DELLA over row chunks: the kept fraction is the density, and the L1 rescale is one factor for the
    whole tensor (a per-chunk factor would vary from chunk to chunk), from the same seed the same output."""
    yml = (
        f"merge_method: {method}\nbase_model: {family['base']}\nmodels:\n"
        f"  - {{model: {family['skill']}, parameters: {{weight: 1.0, density: 0.3{extra}}}}}\n"
    )
    config = load_config(yml)
    monkeypatch.setattr(merge_module, "CHUNK_BYTES", 1000)
    monkeypatch.setattr(merge_module, "HALF_WHOLE_BYTES", 0)
    calls = _record_chunked_merges(monkeypatch)
    name = "model.embed_tokens.weight"
    merged = dict(merge_tensors(config, seed=7))[name]
    assert calls.count(name) == 1
    assert torch.equal(merged, dict(merge_tensors(config, seed=7))[name])
    assert not torch.equal(merged, dict(merge_tensors(config, seed=8))[name])
    base = open_checkpoint(family["base"]).get(name)
    delta = open_checkpoint(family["skill"]).get(name) - base
    out = merged - base
    kept = out != 0
    assert kept.float().mean().item() == pytest.approx(0.3, abs=0.02)
    ratio = (out[kept] / delta[kept]).double()
    assert (ratio.max() - ratio.min()) / ratio.mean() < 1e-3  # one factor: float rounding only
    assert (out.abs().sum() / delta.abs().sum()).item() == pytest.approx(1.0, rel=1e-4)  # L1 kept


def test_nan_in_a_chunk_names_tensor_file_and_rows(family, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(merge_module, "CHUNK_BYTES", 1000)
    skill = _member(tmp_path, "nan", poison=LAST)
    yml = tmp_path / "m.yml"
    yml.write_text(ta_yaml(family["base"], family["general"], skill))
    assert cli_main(["merge", str(yml), "--out", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err
    assert f"tensor {LAST} in {skill / 'model.safetensors'} contains NaN or Inf (rows 126-127)" in err
    assert leftovers(tmp_path, "out") == []


def test_existing_folder_is_kept_without_overwrite(family, tmp_path, capsys):
    yml = tmp_path / "m.yml"
    yml.write_text(ta_yaml(family["base"], family["general"], family["skill"]))
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    assert cli_main(["merge", str(yml), "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err and str(out) in err
    assert (out / "precious.txt").exists()
    assert cli_main(["merge", str(yml), "--out", str(out), "-q", "--overwrite", "--dtype", "bfloat16"]) == 0
    assert not (out / "precious.txt").exists()
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert open_checkpoint(out).info(LAST).dtype == torch.bfloat16
    assert leftovers(tmp_path, "out") == ["out"]
    assert capsys.readouterr().err == ""  # --quiet


def test_interrupt_mid_merge_leaves_nothing(family, tmp_path):
    config = load_config(ta_yaml(family["base"], family["general"], family["skill"]))

    def interrupt(i, n):
        if i == 7:
            raise KeyboardInterrupt  # what Ctrl-C raises

    with pytest.raises(KeyboardInterrupt):
        export_merge(config, tmp_path / "out", progress=interrupt)
    assert leftovers(tmp_path, "out") == []


def _member(root: Path, name: str, config: dict = CONFIG, *, variant: int = 2, drop=None, extra=None, poison=None):
    tensors = []
    for n, s in tensor_shapes(config):
        if n == drop:
            continue
        t = family_tensor(n, s, family_seed=0, variant=variant)
        if n == poison:
            t.view(-1)[-1] = float("nan") if "norm" in n else float("inf")
        tensors.append((n, t))
    if extra:
        tensors.append((extra, torch.zeros(4)))
    return write_checkpoint_files(root / name, config, tensors, tokenizer=False)


def _truncate(folder: Path) -> Path:
    shard = folder / "model.safetensors"
    shard.write_bytes(shard.read_bytes()[:-64])
    return shard


def _corrupt(folder: Path) -> Path:
    shard = folder / "model.safetensors"
    data = bytearray(shard.read_bytes())
    data[8:20] = b"#garbage####"
    shard.write_bytes(bytes(data))
    return shard


BAD_INPUTS = {
    # name: (make the skill checkpoint, yaml extra / override, expected fragments of the message)
    "vocab": (lambda r: _member(r, "vocab", llama_config(vocab_size=100)), None, ["vocab size differs", "vocab"]),
    "shape": (lambda r: _member(r, "shape", llama_config(intermediate_size=96)), None,
              ["shape mismatch", "model.layers.0.mlp.gate_proj.weight", "shape/model.safetensors"]),
    "missing": (lambda r: _member(r, "missing", drop="model.layers.1.self_attn.k_proj.weight"), None,
                ["model.layers.1.self_attn.k_proj.weight is missing from", "missing"]),
    "only_some": (lambda r: _member(r, "only_some", extra="model.extra.bias"), None,
                  ["model.extra.bias is only in", "only_some"]),
    "nan_last": (lambda r: _member(r, "nan_last", poison=LAST), None, [LAST, "nan_last/model.safetensors", "NaN or Inf"]),
    "inf_norm": (lambda r: _member(r, "inf_norm", poison="model.layers.1.input_layernorm.weight"), None,
                 ["model.layers.1.input_layernorm.weight", "NaN or Inf"]),
    "truncated": (lambda r: _truncate(_member(r, "truncated")).parent, None, ["truncated/model.safetensors", "truncated"]),
    "corrupt": (lambda r: _corrupt(_member(r, "corrupt")).parent, None, ["corrupt/model.safetensors", "header"]),
    "unknown_method": (None, "merge_method: frankenmerge\n", ["merge_method", "frankenmerge"]),
    "unknown_param": (None, "parameters: {densty: 0.5}\n", ["strict mode", "densty", "did you mean 'density'"]),
    "bad_value": (None, "parameters: {lambda: [{filter: mlp, value: lots}]}\n", ["parameters.lambda", "lots"]),
    "bad_yaml": (None, "models: [unclosed\n", ["invalid YAML", "line"]),
    "missing_model": (lambda r: r / "does-not-exist", None, ["does-not-exist", "no such checkpoint folder"]),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_named_and_leaves_nothing(family, tmp_path, capsys, case):
    make, extra, fragments = BAD_INPUTS[case]
    skill = make(tmp_path) if make else family["skill"]
    text = ta_yaml(family["base"], family["general"], skill)
    if extra and extra.startswith("merge_method"):
        text = extra + text.split("\n", 1)[1]
    elif extra and extra.startswith("models"):
        text = text + extra
    elif extra:
        text += extra
    yml = tmp_path / "bad.yml"
    yml.write_text(text)
    out = tmp_path / "out"
    strict = ["--strict"] if case == "unknown_param" else []  # by default such a key is ignored, as mergekit does
    assert cli_main(["merge", str(yml), "--out", str(out), "-q", *strict]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, f"{case}: {fragment!r} not in {err!r}"
    assert leftovers(tmp_path, "out") == []


def test_write_checkpoint_without_a_plan_buffers_the_stream(family, tmp_path):
    from engine.export import write_checkpoint

    source = open_checkpoint(family["general"])
    tensors = [(n, source.get(n)) for n in source.tensor_names()]
    out = write_checkpoint(iter(tensors), tmp_path / "copy", source=source, shard_size=40_000)
    copy = open_checkpoint(out)
    assert (out / "model.safetensors.index.json").exists() and (out / "tokenizer.json").exists()
    assert all(torch.equal(t, copy.get(n)) for n, t in tensors)


def test_unavailable_device_is_an_error(family, tmp_path, capsys):
    yml = tmp_path / "m.yml"
    yml.write_text(ta_yaml(family["base"], family["general"], family["skill"]))
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: --device cuda is valid here")
    assert cli_main(["merge", str(yml), "--out", str(tmp_path / "out"), "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert cli_main(["merge", str(yml), "--out", str(tmp_path / "out"), "--device", "tpu"]) == 2
    assert "--device" in capsys.readouterr().err
    assert leftovers(tmp_path, "out") == []
