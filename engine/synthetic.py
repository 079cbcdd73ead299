"""Synthetic Llama-shaped checkpoints (real safetensors + config.json + tokenizer) for tests and benchmarks.

A "family" is a base checkpoint plus fine-tunes that each add a small, seeded perturbation to it, so merges of
them behave like merges of real fine-tunes (small task vectors of mixed sign). Tensors are generated and written
one at a time, so a multi-gigabyte checkpoint costs a few tensors of memory to build.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from engine.vocab import vocab_size_of

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def llama_config(
    *,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int = 128,
    vocab_size: int = 128,
    tie_word_embeddings: bool = False,
    torch_dtype: str = "float32",
) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden_size,
        "num_hidden_layers": num_hidden_layers,
        "num_attention_heads": num_attention_heads,
        "num_key_value_heads": num_key_value_heads,
        "intermediate_size": intermediate_size,
        "vocab_size": vocab_size,
        "max_position_embeddings": 256,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": tie_word_embeddings,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "torch_dtype": torch_dtype,
    }


# Synthetic shapes by size: (vocab, hidden) ladders tried largest first; the first whose embeddings take at most
# half the size and whose depth is Llama-like (hidden/128 .. hidden/16 layers, at least 2) wins; the MLP width is
# then fitted so the checkpoint lands close to the requested size.
_VOCABS = (32000, 16384, 8192, 4096, 1024)
_HIDDENS = (4096, 2048, 1024, 512, 256, 128, 64)
_INTER_STEP = 16


def _layer_params(hidden: int, inter: int) -> int:
    """One decoder block of `llama_config` (kv heads = heads): q/k/v/o, gate/up/down, two norms."""
    return 4 * hidden * hidden + 3 * hidden * inter + 2 * hidden


def _fit(params: float, vocab: int, hidden: int) -> tuple[int, int]:
    """(layers, intermediate size) that bring a (vocab, hidden) Llama closest to `params` parameters."""
    fixed = 2 * vocab * hidden + hidden  # embeddings, lm_head, final norm
    default_inter = _INTER_STEP * round(2.75 * hidden / _INTER_STEP)
    layers = max(1, round((params - fixed) / _layer_params(hidden, default_inter)))
    per_layer = (params - fixed) / layers
    inter = round((per_layer - 4 * hidden * hidden - 2 * hidden) / (3 * hidden) / _INTER_STEP) * _INTER_STEP
    return layers, min(max(inter, 2 * hidden), 4 * hidden)


def config_for_size(size_bytes: int, *, bytes_per_param: int = 4) -> dict:
    """A Llama config (`llama_config`) whose checkpoint is close to `size_bytes`: from a few MB (vocab 1024, hidden
    64) to tens of GB (vocab 32000, hidden 4096). `checkpoint_bytes` gives the size it makes."""
    params = size_bytes / bytes_per_param
    candidates = []
    for vocab in _VOCABS:
        for hidden in _HIDDENS:
            layers, inter = _fit(params, vocab, hidden)
            config = llama_config(
                hidden_size=hidden,
                num_hidden_layers=layers,
                num_attention_heads=max(1, hidden // 64),
                num_key_value_heads=max(1, hidden // 64),
                intermediate_size=inter,
                vocab_size=vocab,
            )
            llama_like = 2 * vocab * hidden <= params / 2 and max(2, hidden // 128) <= layers <= hidden // 16
            if llama_like:
                return config
            candidates.append(config)
    # Outside the ladders (under ~1 MB, or beyond ~100 GB): the closest shape there is.
    return min(candidates, key=lambda c: abs(checkpoint_bytes(c, bytes_per_param) - size_bytes))


def checkpoint_bytes(config: dict, bytes_per_param: int = 4) -> int:
    """The weights' size of a checkpoint of `config` (safetensors headers aside)."""
    return bytes_per_param * sum(math.prod(shape) for _name, shape in tensor_shapes(config))


ARCHITECTURES = (
    "llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3", "gpt2", "granite", "mixtral", "llava",
)  # fmt: skip

_CLASSES = {
    "llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM", "gemma2": "Gemma2ForCausalLM", "gemma3_text": "Gemma3ForCausalLM",
    "phi3": "Phi3ForCausalLM", "gpt2": "GPT2LMHeadModel", "granite": "GraniteForCausalLM",
    "mixtral": "MixtralForCausalLM", "llava": "LlavaForConditionalGeneration",
}  # fmt: skip


def arch_config(arch: str, **overrides) -> dict:
    """A tiny config.json of one of `ARCHITECTURES` (Llama-sized defaults, the architecture's own keys)."""
    if arch not in _CLASSES:
        raise ValueError(f"unknown architecture {arch!r} (known: {', '.join(ARCHITECTURES)})")
    text = dict(llama_config(**overrides), model_type=arch, architectures=[_CLASSES[arch]])
    text["head_dim"] = text["hidden_size"] // text["num_attention_heads"]
    if arch in ("gemma2", "gemma3_text"):
        text["tie_word_embeddings"] = overrides.get("tie_word_embeddings", True)
    if arch == "mixtral":
        text.update(num_local_experts=4, num_experts_per_tok=2)
    if arch == "gpt2":
        h = text
        return {
            "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": h["hidden_size"],
            "n_layer": h["num_hidden_layers"], "n_head": h["num_attention_heads"], "n_positions": 64,
            "n_inner": h["intermediate_size"], "vocab_size": h["vocab_size"], "tie_word_embeddings": True,
            "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": h["torch_dtype"],
        }  # fmt: skip
    if arch == "llava":
        text = dict(text, model_type="llama", architectures=["LlamaForCausalLM"])
        vision = {"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                  "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 16, "patch_size": 8}  # fmt: skip
        return {
            "architectures": ["LlavaForConditionalGeneration"], "model_type": "llava", "text_config": text,
            "vision_config": vision, "image_token_index": 3, "projector_hidden_act": "gelu",
            "vision_feature_layer": -2, "vision_feature_select_strategy": "default",
            "vocab_size": text["vocab_size"], "tie_word_embeddings": False, "torch_dtype": text["torch_dtype"],
        }  # fmt: skip
    return text


def _decoder_layer(arch: str, p: str, config: dict) -> list[tuple[str, tuple[int, ...]]]:
    """One decoder block's tensors (Llama-style naming) for the given architecture."""
    h, inter = config["hidden_size"], config["intermediate_size"]
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    hd = h // heads
    out: list[tuple[str, tuple[int, ...]]] = []
    if arch == "phi3":  # fused projections
        out += [(p + "self_attn.qkv_proj.weight", (h + 2 * kv * hd, h)), (p + "self_attn.o_proj.weight", (h, h))]
        out += [(p + "mlp.gate_up_proj.weight", (2 * inter, h)), (p + "mlp.down_proj.weight", (h, inter))]
    else:
        out += [
            (p + "self_attn.q_proj.weight", (h, h)),
            (p + "self_attn.k_proj.weight", (kv * hd, h)),
            (p + "self_attn.v_proj.weight", (kv * hd, h)),
            (p + "self_attn.o_proj.weight", (h, h)),
        ]
        if arch == "qwen2":
            out += [(p + f"self_attn.{x}_proj.bias", (n,)) for x, n in (("q", h), ("k", kv * hd), ("v", kv * hd))]
        if arch in ("qwen3", "gemma3_text"):
            out += [(p + "self_attn.q_norm.weight", (hd,)), (p + "self_attn.k_norm.weight", (hd,))]
        if arch == "mixtral":
            experts = config["num_local_experts"]
            out.append((p + "block_sparse_moe.gate.weight", (experts, h)))
            for e in range(experts):
                q = f"{p}block_sparse_moe.experts.{e}."
                out += [(q + "w1.weight", (inter, h)), (q + "w2.weight", (h, inter)), (q + "w3.weight", (inter, h))]
        else:
            out += [
                (p + "mlp.gate_proj.weight", (inter, h)),
                (p + "mlp.up_proj.weight", (inter, h)),
                (p + "mlp.down_proj.weight", (h, inter)),
            ]
    out += [(p + "input_layernorm.weight", (h,)), (p + "post_attention_layernorm.weight", (h,))]
    if arch in ("gemma2", "gemma3_text"):
        out += [(p + "pre_feedforward_layernorm.weight", (h,)), (p + "post_feedforward_layernorm.weight", (h,))]
    return out


def _gpt2_shapes(config: dict) -> list[tuple[str, tuple[int, ...]]]:
    h, inter, v = config["n_embd"], config["n_inner"], config["vocab_size"]
    out = [("transformer.wte.weight", (v, h)), ("transformer.wpe.weight", (config["n_positions"], h))]
    for i in range(config["n_layer"]):
        p = f"transformer.h.{i}."
        out += [
            (p + "ln_1.weight", (h,)), (p + "ln_1.bias", (h,)),
            (p + "attn.c_attn.weight", (h, 3 * h)), (p + "attn.c_attn.bias", (3 * h,)),
            (p + "attn.c_proj.weight", (h, h)), (p + "attn.c_proj.bias", (h,)),
            (p + "ln_2.weight", (h,)), (p + "ln_2.bias", (h,)),
            (p + "mlp.c_fc.weight", (h, inter)), (p + "mlp.c_fc.bias", (inter,)),
            (p + "mlp.c_proj.weight", (inter, h)), (p + "mlp.c_proj.bias", (h,)),
        ]  # fmt: skip
    return out + [("transformer.ln_f.weight", (h,)), ("transformer.ln_f.bias", (h,))]


def _llava_shapes(config: dict) -> list[tuple[str, tuple[int, ...]]]:
    text, vision = config["text_config"], config["vision_config"]
    vh, vi = vision["hidden_size"], vision["intermediate_size"]
    patches = (vision["image_size"] // vision["patch_size"]) ** 2 + 1
    vp = "vision_tower.vision_model."
    out = [
        (vp + "embeddings.class_embedding", (vh,)),
        (vp + "embeddings.patch_embedding.weight", (vh, 3, vision["patch_size"], vision["patch_size"])),
        (vp + "embeddings.position_embedding.weight", (patches, vh)),
        (vp + "pre_layrnorm.weight", (vh,)), (vp + "pre_layrnorm.bias", (vh,)),
    ]  # fmt: skip
    for i in range(vision["num_hidden_layers"]):
        p = f"{vp}encoder.layers.{i}."
        for x in ("q", "k", "v", "out"):
            out += [(p + f"self_attn.{x}_proj.weight", (vh, vh)), (p + f"self_attn.{x}_proj.bias", (vh,))]
        out += [(p + "layer_norm1.weight", (vh,)), (p + "layer_norm1.bias", (vh,))]
        out += [(p + "mlp.fc1.weight", (vi, vh)), (p + "mlp.fc1.bias", (vi,))]
        out += [(p + "mlp.fc2.weight", (vh, vi)), (p + "mlp.fc2.bias", (vh,))]
        out += [(p + "layer_norm2.weight", (vh,)), (p + "layer_norm2.bias", (vh,))]
    out += [(vp + "post_layernorm.weight", (vh,)), (vp + "post_layernorm.bias", (vh,))]
    h = text["hidden_size"]
    out += [("multi_modal_projector.linear_1.weight", (h, vh)), ("multi_modal_projector.linear_1.bias", (h,))]
    out += [("multi_modal_projector.linear_2.weight", (h, h)), ("multi_modal_projector.linear_2.bias", (h,))]
    return out + [(f"language_model.{n}", s) for n, s in tensor_shapes(text)]


def tensor_shapes(config: dict) -> list[tuple[str, tuple[int, ...]]]:
    """HF tensor names and shapes of a config's architecture (`arch_config`; Llama when unspecified), in the
    order transformers saves them."""
    arch = config.get("model_type", "llama")
    if arch == "gpt2":
        return _gpt2_shapes(config)
    if arch == "llava":
        return _llava_shapes(config)
    h, v = config["hidden_size"], config["vocab_size"]
    out = [("model.embed_tokens.weight", (v, h))]
    for i in range(config["num_hidden_layers"]):
        out += _decoder_layer(arch, f"model.layers.{i}.", config)
    out.append(("model.norm.weight", (h,)))
    if not config.get("tie_word_embeddings"):
        out.append(("lm_head.weight", (v, h)))
    return out


def _seed(*parts: object) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:7], "little")


def family_tensor(
    name: str, shape: Sequence[int], *, family_seed: int, variant: int, delta_scale: float = 0.01
) -> torch.Tensor:
    """The tensor `name` of fine-tune `variant` (0 = the base): base + delta_scale · noise(variant)."""
    gen = torch.Generator().manual_seed(_seed(family_seed, name))
    if name.endswith("norm.weight"):
        base = 1 + 0.1 * torch.randn(tuple(shape), generator=gen)
    else:
        base = torch.randn(tuple(shape), generator=gen) * 0.05
    if variant:
        gen.manual_seed(_seed(family_seed, name, variant))
        base.add_(torch.randn(tuple(shape), generator=gen), alpha=delta_scale * 0.05)
    return base


def write_tokenizer(folder: Path, vocab_size: int, extra_tokens: Sequence[str] = ()) -> None:
    """A character-level WordLevel tokenizer with a chat template (enough for AutoTokenizer and vLLM). The last
    ids go to `extra_tokens` when given (vocabularies that differ in more than their length)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    chars = [chr(c) for c in range(32, 127)]
    tokens = (specials + chars)[: vocab_size - len(extra_tokens)] + list(extra_tokens)
    vocab = {tok: i for i, tok in enumerate(tokens)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
                "pad_token": "<pad>",
                "chat_template": CHAT_TEMPLATE,
                "model_max_length": 256,
            },
            indent=2,
        )
    )
    (folder / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"})
    )


def write_checkpoint_files(
    folder: str | os.PathLike,
    config: dict,
    tensors: Iterator[tuple[str, torch.Tensor]],
    *,
    shard_size: int | None = None,
    tokenizer: bool = True,
) -> Path:
    """Write `tensors` (a stream, in order) as a checkpoint folder: shards + index when `shard_size` splits it."""
    from engine.export import TensorSlot, write_shards

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = list(tensors) if not isinstance(tensors, list) else tensors
    slots = [TensorSlot(n, tuple(t.shape), t.dtype) for n, t in tensors]
    write_shards(iter(tensors), slots, folder, shard_size or 2**62)
    return _write_support_files(folder, config, tokenizer=tokenizer)


def write_family_member(
    folder: str | os.PathLike,
    config: dict,
    *,
    family_seed: int = 0,
    variant: int = 0,
    delta_scale: float = 0.01,
    shard_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    tokenizer: bool = True,
    extra_tokens: Sequence[str] = (),
) -> Path:
    """One member of a synthetic family, streamed to disk tensor by tensor (memory: one tensor)."""
    from engine.export import TensorSlot, write_shards

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shapes = tensor_shapes(config)
    slots = [TensorSlot(n, tuple(s), dtype) for n, s in shapes]
    stream = (
        (n, family_tensor(n, s, family_seed=family_seed, variant=variant, delta_scale=delta_scale).to(dtype))
        for n, s in shapes
    )
    write_shards(stream, slots, folder, shard_size or 2**62)
    cfg = dict(config, torch_dtype=str(dtype).removeprefix("torch."))
    return _write_support_files(folder, cfg, tokenizer=tokenizer, extra_tokens=extra_tokens)


def _write_support_files(folder: Path, config: dict, *, tokenizer: bool, extra_tokens: Sequence[str] = ()) -> Path:
    """config.json, generation_config.json and (optionally) a tokenizer beside the weights."""
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "generation_config.json").write_text(
        json.dumps({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "max_new_tokens": 16})
    )
    if tokenizer:
        write_tokenizer(folder, vocab_size_of(config), extra_tokens)
    return folder


def write_family(
    root: str | os.PathLike,
    config: dict,
    names: Sequence[str] = ("base", "a", "b"),
    *,
    family_seed: int = 0,
    delta_scale: float = 0.01,
    shard_size: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> dict[str, Path]:
    """`names[0]` is the base, the others its fine-tunes. Returns name -> folder."""
    root = Path(root)
    return {
        name: write_family_member(
            root / name,
            config,
            family_seed=family_seed,
            variant=i,
            delta_scale=delta_scale,
            shard_size=shard_size,
            dtype=dtype,
        )
        for i, name in enumerate(names)
    }
