"""Checkpoints: single and sharded safetensors, hub ids from the local cache, pickle refusal and opt-in,
corrupt and truncated shards, and the compatibility report (`mergescope inspect`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.checkpoint import open_checkpoint
from engine.cli import main as cli_main
from engine.compat import compatibility_report
from engine.errors import CheckpointError
from engine.synthetic import (
    family_tensor,
    llama_config,
    tensor_shapes,
    write_checkpoint_files,
    write_family_member,
)

CONFIG = llama_config()


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    return {
        "single": write_family_member(root / "single", CONFIG, variant=1),
        "sharded": write_family_member(root / "sharded", CONFIG, variant=1, shard_size=50_000),
        "other": write_family_member(root / "other", CONFIG, variant=2),
    }


def test_single_and_sharded_read_the_same_tensors(ckpts):
    single, sharded = open_checkpoint(ckpts["single"]), open_checkpoint(ckpts["sharded"])
    assert (ckpts["sharded"] / "model.safetensors.index.json").exists()
    assert len({sharded.info(n).file for n in sharded.tensor_names()}) > 2
    assert single.tensor_names() == sharded.tensor_names() == [n for n, _ in tensor_shapes(CONFIG)]
    for name, shape in tensor_shapes(CONFIG):
        expected = family_tensor(name, shape, family_seed=0, variant=1)
        assert single.info(name).shape == tuple(shape)
        assert torch.equal(single.get(name), expected)
        assert torch.equal(sharded.get(name), expected)
    rows = sharded.get_rows("model.embed_tokens.weight", 5, 9)
    assert torch.equal(rows, sharded.get("model.embed_tokens.weight")[5:9])
    assert single.num_layers == 2 and single.config["vocab_size"] == 128


def test_identity_is_stable_and_content_derived(ckpts):
    a1, a2 = open_checkpoint(ckpts["single"]), open_checkpoint(ckpts["single"])
    assert a1.identity() == a2.identity()
    assert a1.identity() != open_checkpoint(ckpts["other"]).identity()


def _hub_cache(root: Path, source: Path, repo: str = "org/tiny") -> Path:
    """huggingface_hub's cache layout: models--org--name/{refs/main, snapshots/<commit>/files}."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = root / f"models--{repo.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / commit
    shutil.copytree(source, snapshot)
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    return snapshot


SNIPPET = "from engine.checkpoint import open_checkpoint as o; c = o({ref!r}); print(c.name, c.path, len(c.tensor_names()))"


def test_hub_id_resolves_from_the_local_cache_offline(ckpts, tmp_path):
    cache = tmp_path / "hub"
    snapshot = _hub_cache(cache, ckpts["single"])
    env = dict(os.environ, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-c", SNIPPET.format(ref="org/tiny")], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    name, path, count = proc.stdout.split()
    assert name == "org/tiny" and Path(path) == snapshot and int(count) == len(tensor_shapes(CONFIG))
    # not cached, hub unreachable: a clear error, through the CLI (exit 2)
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", "inspect", "org/missing"], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "org/missing: not a local folder, not in the Hugging Face cache" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_local_folder(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint folder"):
        open_checkpoint(tmp_path / "nope")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickle_refused_unless_opted_in_and_then_weights_only(tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(CONFIG))
    state = {"model.norm.weight": torch.arange(4.0)}
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="--allow-pickle") as info:
        open_checkpoint(folder)
    assert "pytorch_model.bin" in str(info.value) and "arbitrary code" in str(info.value)
    ckpt = open_checkpoint(folder, allow_pickle=True)
    assert torch.equal(ckpt.get("model.norm.weight"), torch.arange(4.0))
    # weights_only=True: a pickle that would run code is refused even with the opt-in
    evil = tmp_path / "evil"
    evil.mkdir()
    torch.save({"x": _Evil()}, evil / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="cannot load pickle weights"):
        open_checkpoint(evil, allow_pickle=True)
    # and the CLI names the flag
    assert cli_main(["inspect", str(folder)]) == 2


def test_truncated_and_corrupt_shards_name_the_file(ckpts, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(ckpts["sharded"], broken)
    shard = sorted(broken.glob("model-*.safetensors"))[1]
    data = shard.read_bytes()
    shard.write_bytes(data[:-100])
    with pytest.raises(CheckpointError, match=f"{shard.name}: truncated"):
        open_checkpoint(broken)
    shard.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(CheckpointError, match=f"{shard.name}: cannot read safetensors header"):
        open_checkpoint(broken)
    shard.write_bytes(b"\x04")
    with pytest.raises(CheckpointError, match=f"{shard.name}: truncated safetensors file"):
        open_checkpoint(broken)
    shard.unlink()
    with pytest.raises(CheckpointError, match=f"shard {shard.name} is missing"):
        open_checkpoint(broken)


def _variant(folder: Path, config: dict, *, drop: str | None = None, extra: str | None = None, dtype=None):
    tensors = [
        (n, family_tensor(n, s, family_seed=0, variant=3).to(dtype or torch.float32))
        for n, s in tensor_shapes(config)
        if n != drop
    ]
    if extra:
        tensors.append((extra, torch.zeros(3)))
    return write_checkpoint_files(folder, config, tensors, tokenizer=False)


def test_compatibility_report_names_each_difference(ckpts, tmp_path, capsys):
    a = open_checkpoint(ckpts["single"])
    b = open_checkpoint(ckpts["other"])
    report = compatibility_report([a, b])
    assert report.ok and "compatible: yes" in report.format()
    vocab = _variant(tmp_path / "vocab", llama_config(vocab_size=100))
    missing = _variant(tmp_path / "missing", CONFIG, drop="model.layers.1.mlp.up_proj.weight", extra="extra.bias")
    half = _variant(tmp_path / "half", CONFIG, dtype=torch.bfloat16)
    report = compatibility_report([a, open_checkpoint(vocab), open_checkpoint(missing), open_checkpoint(half)])
    assert not report.ok
    text = report.format()
    assert "config.vocab_size: 128 in single, 100 in vocab" in text
    assert "model.embed_tokens.weight: [128, 64] in single, [100, 64] in vocab" in text
    assert "model.layers.1.mlp.up_proj.weight missing from missing" in text
    assert "extra.bias only in missing" in text
    assert "dtype" in text and "half" in text  # a dtype difference is named (merges fine: computed in float32)
    # the CLI prints the same report and exits 1 when the set cannot be merged
    assert cli_main(["inspect", str(ckpts["single"]), str(vocab), str(missing)]) == 1
    out = capsys.readouterr().out
    assert "config.vocab_size" in out and "extra.bias only in missing" in out
    assert cli_main(["inspect", str(ckpts["single"]), str(ckpts["other"])]) == 0
    assert "compatible: yes" in capsys.readouterr().out
