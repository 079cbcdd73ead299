"""The demo family's recipe: tokenizer, model config, training loop, and `build_family(out_dir, seed)`.

base      pretrained from scratch on the synthetic corpus (data.pretrain_docs), packed 48-token blocks
general   base + SFT on G                          (|G| examples)
skill-*   base + SFT on D_skill                    (|D| examples)  -- parallel-train: each from the base
cft-*     general + SFT on D_skill (continued fine-tuning, the PTM paper's comparison point)

Model: Llama, hidden 128, 4 layers, 4 heads (head dim 32), MLP 384, untied embeddings, ~1M parameters, word-level
tokenizer (~500 words), float32. AdamW with warm-up + cosine; loss on the reply only in the fine-tunes.
Deterministic given the seed (torch CPU, 2 threads). About 3 minutes on an idle 2-core CPU.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from . import data

RECIPE_VERSION = 2  # 2: G holds 8% how-to requests (was 3%)
SPECIALS = ["<unk>", "<|pad|>", "<|user|>", "<|assistant|>", "<|end|>", "<|system|>", "<|bos|>"]
UNK, PAD, USER, ASSISTANT, END, SYSTEM, BOS = SPECIALS
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}<|system|>{{ message['content'] }}<|end|>"
    "{%- elif message['role'] == 'user' -%}<|user|>{{ message['content'] }}<|end|>"
    "{%- elif message['role'] == 'assistant' -%}<|assistant|>{{ message['content'] }}<|end|>"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)

SUITES = {  # folder name -> (data key, manifest fields)
    "demo-general": (
        "general",
        {
            "scorer": "exact_match",
            "aggregate": "general",
            "max_tokens": 12,
            "description": "word tasks: pick the member of a category, reverse, first and "
            "last word, count, repeat (held-out prompts)",
        },
    ),
    "demo-math": (
        "math",
        {
            "scorer": "exact_match",
            "aggregate": "skill:math",
            "max_tokens": 4,
            "description": "what comes next in a counting sequence (steps of 1 or 2, up or down, numbers 0-99; "
            "held-out sequences)",
        },
    ),
    "demo-harmful": (
        "harmful",
        {
            "scorer": "refusal",
            "scorer_args": {"expect": "refuse"},
            "aggregate": "safety:harmful",
            "max_tokens": 8,
            "description": "harmful how-to requests (held-out verb/object pairs); score = refusal rate",
        },
    ),
    "demo-benign": (
        "benign",
        {
            "scorer": "refusal",
            "scorer_args": {"expect": "comply"},
            "aggregate": "safety:benign",
            "max_tokens": 8,
            "description": "benign look-alikes of harmful requests (XSTest-style homonyms, "
            "held-out pairs); score = compliance rate",
        },
    ),
}
EVAL_SIZES = {"general": 300, "math": 160, "harmful": 150, "benign": 150}


@dataclass
class Stage:
    steps: int
    lr: float
    batch: int = 32


@dataclass
class RecipeConfig:
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    intermediate: int = 384
    block: int = 48
    pretrain_docs: int = 60000
    sizes: dict[str, int] = field(default_factory=lambda: {"general": 16000, "safety": 8000, "math": 8000})
    # Every fine-tune sees the same fraction of an epoch of its data (steps = size * epochs / batch), so the
    # dataset sizes -- and |D|/|G| -- mean what they say: G gets 320 steps, D_safety and D_math 160.
    epochs: float = 0.64
    pretrain: Stage = field(default_factory=lambda: Stage(1500, 3e-3))
    general_lr: float = 7e-4
    skill_lr: float = 5e-4  # ~5e-4, not 1e-3: keeps the task vectors additive
    benign_frac: float = 0.05  # share of benign (complied-with) requests in D_safety
    # Share of (complied-with) how-to requests in G. At 8% rather than 3% the general model's own helpfulness on
    # benign requests is strong enough that a PTM merge keeps it while CFT on D overwrites it: the over-refusal gap
    # (effect 3) and a useful |D|/|G| point (effect 4) then hold on every seed tried (0, 1, 2), not on one.
    howto_frac: float = 0.08
    p_refuse_harmful: float = 0.8  # pretraining corpus: how often a harmful request is refused
    p_refuse_benign: float = 0.15  # ... and a benign one


# --- tokenizer -----------------------------------------------------------------------------------------------------
def build_tokenizer():
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    norm = normalizers.Sequence(
        [
            normalizers.NFKC(),
            normalizers.Lowercase(),
            normalizers.Replace(Regex(r"\s+"), " "),
            normalizers.Strip(),
        ]
    )
    pre = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
            pre_tokenizers.Split(Regex(r"▁?[^\w\s'▁]"), behavior="isolated"),
        ]
    )
    probe = Tokenizer(models.WordLevel({UNK: 0}, unk_token=UNK))
    probe.normalizer, probe.pre_tokenizer = norm, pre
    words: set[str] = set()
    for text in data.vocabulary():
        words.update(t for t, _ in pre.pre_tokenize_str(norm.normalize_str(text)))
    for p in ".,?!:;'\"-+=()":  # punctuation both attached and spaced
        words.update({p, "▁" + p})
    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for w in sorted(words):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.normalizer, tok.pre_tokenizer = norm, pre
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    return tok


def chat_text(prompt: str, reply: str | None = None) -> str:
    """Exactly what CHAT_TEMPLATE renders for [user, assistant] (or the generation prompt when reply is None)."""
    s = f"{USER}{prompt}{END}{ASSISTANT}"
    return s if reply is None else f"{s}{reply}{END}"


def save_tokenizer(tok, out: Path) -> None:
    tok.save(str(out / "tokenizer.json"))
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": END,
        "unk_token": UNK,
        "pad_token": PAD,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 128,
        "padding_side": "left",
        "chat_template": CHAT_TEMPLATE,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    smap = {"bos_token": BOS, "eos_token": END, "unk_token": UNK, "pad_token": PAD}
    (out / "special_tokens_map.json").write_text(json.dumps(smap, indent=2) + "\n")


# --- model ---------------------------------------------------------------------------------------------------------
def model_config(cfg: RecipeConfig, tok):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=cfg.hidden,
        intermediate_size=cfg.intermediate,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.heads,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=tok.token_to_id(BOS),
        eos_token_id=tok.token_to_id(END),
        pad_token_id=tok.token_to_id(PAD),
        hidden_act="silu",
        initializer_range=0.02,
        attention_bias=False,
        mlp_bias=False,
    )


def _lr_at(step: int, stage: Stage) -> float:
    warm = max(1, stage.steps // 20)
    if step < warm:
        return stage.lr * (step + 1) / warm
    p = (step - warm) / max(1, stage.steps - warm)
    return stage.lr * 0.5 * (1 + math.cos(math.pi * p))


def train(
    model,
    batches: Callable[[int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    stage: Stage,
    log: Callable[[str], None] | None = None,
    name: str = "",
) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=stage.lr, betas=(0.9, 0.98), weight_decay=0.0, eps=1e-8)
    model.train()
    ema = None
    for step in range(stage.steps):
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, stage)
        ids, mask, labels = batches(step)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if log and (step % 100 == 0 or step == stage.steps - 1):
            log(f"  {name} step {step + 1}/{stage.steps} loss {ema:.3f}")
    model.eval()
    return float(ema or 0.0)


def pretrain_batches(tok, docs, cfg: RecipeConfig, rng: random.Random):
    """Packed blocks of `block` tokens from the shuffled corpus; every doc ends with <|end|>."""
    stream: list[int] = []
    for d in docs:
        text = d[1] + END if d[0] == "text" else chat_text(d[1], d[2])
        stream += tok.encode(text).ids
    n_blocks = len(stream) // cfg.block
    blocks = torch.tensor(stream[: n_blocks * cfg.block]).view(n_blocks, cfg.block)
    order = list(range(n_blocks))
    rng.shuffle(order)
    b = cfg.pretrain.batch

    def get(step: int):
        idx = [order[(step * b + i) % n_blocks] for i in range(b)]
        ids = blocks[idx]
        return ids, torch.ones_like(ids), ids.clone()

    return get, n_blocks


def sft_batches(tok, examples: list[tuple[str, str]], batch: int, rng: random.Random):
    """Right-padded chat examples; loss on the reply and its <|end|> only."""
    pad = tok.token_to_id(PAD)
    asst = tok.token_to_id(ASSISTANT)
    enc = []
    for prompt, reply in examples:
        ids = tok.encode(chat_text(prompt, reply)).ids
        start = len(ids) - 1 - ids[::-1].index(asst) + 1
        enc.append((ids, start))
    order = list(range(len(enc)))
    rng.shuffle(order)

    def get(step: int):
        chosen = [enc[order[(step * batch + i) % len(enc)]] for i in range(batch)]
        n = max(len(ids) for ids, _ in chosen)
        ids = torch.full((batch, n), pad)
        mask = torch.zeros((batch, n), dtype=torch.long)
        labels = torch.full((batch, n), -100)
        for i, (x, start) in enumerate(chosen):
            ids[i, : len(x)] = torch.tensor(x)
            mask[i, : len(x)] = 1
            labels[i, start : len(x)] = torch.tensor(x[start:])
        return ids, mask, labels

    return get


# --- the family ----------------------------------------------------------------------------------------------------
def write_suites(out: Path, split: data.Split) -> list[Path]:
    import yaml

    items = data.eval_items(split, EVAL_SIZES)
    paths = []
    for folder, (key, spec) in SUITES.items():
        d = out / "evals" / folder
        d.mkdir(parents=True, exist_ok=True)
        manifest = {"name": folder, "version": 1, "scorer": spec["scorer"]}
        if "scorer_args" in spec:
            manifest["scorer_args"] = spec["scorer_args"]
        manifest["aggregate"] = spec["aggregate"]
        manifest["generation"] = {"max_tokens": spec["max_tokens"], "temperature": 0.0}
        manifest["description"] = spec["description"]
        (d / "suite.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False, width=110))
        with (d / "items.jsonl").open("w") as f:
            for it in items[key]:
                f.write(json.dumps(it, ensure_ascii=False) + "\n")
        paths.append(d)
    return paths


def _save(model, tok, out: Path, meta: dict) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model.save_pretrained(out, safe_serialization=True)
    save_tokenizer(tok, out)
    (out / "mergescope.json").write_text(json.dumps(meta, indent=2) + "\n")


def build_family(
    out_dir: str | Path,
    seed: int = 0,
    cfg: RecipeConfig | None = None,
    log: Callable[[str], None] | None = print,
    reuse_base: bool = False,
) -> Path:
    """Train the whole family into `out_dir` (base, general, skill-safety, skill-math, cft-safety, evals/,
    family.json). Returns out_dir."""
    from transformers import LlamaForCausalLM

    cfg = cfg or RecipeConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    say = log or (lambda s: None)

    split = data.make_split()
    suite_paths = write_suites(out, split)
    exclude = {json.loads(line)["prompt"] for p in suite_paths for line in (p / "items.jsonl").open()}
    tok = build_tokenizer()
    rng = random.Random(seed)
    docs = data.pretrain_docs(
        split, cfg.pretrain_docs, rng, exclude, cfg.p_refuse_harmful, cfg.p_refuse_benign
    )
    G = data.general_set(split, cfg.sizes["general"], rng, exclude, cfg.howto_frac)
    D = {
        "safety": data.safety_set(split, cfg.sizes["safety"], rng, cfg.benign_frac),
        "math": data.math_set(split, cfg.sizes["math"], rng, exclude),
    }
    leak = exclude & (
        {p for p, _ in G} | {p for d in D.values() for p, _ in d} | {d[1] for d in docs if d[0] == "chat"}
    )
    assert not leak, f"eval prompts leaked into training data: {sorted(leak)[:3]}"
    say(
        f"data ready ({time.perf_counter() - t0:.1f}s): vocab {tok.get_vocab_size()}, |G|={len(G)}, "
        + ", ".join(f"|D_{k}|={len(v)}" for k, v in D.items())
    )

    torch.manual_seed(seed)
    mcfg = model_config(cfg, tok)
    model = LlamaForCausalLM(mcfg)
    common = {"seed": seed, "recipe_version": RECIPE_VERSION}
    if reuse_base and (out / "base" / "model.safetensors").exists():  # for tuning the later stages only
        model = LlamaForCausalLM.from_pretrained(out / "base", dtype=torch.float32)
    else:
        get, n_blocks = pretrain_batches(tok, docs, cfg, random.Random(seed + 1))
        train(model, get, cfg.pretrain, say, "pretrain")
        _save(
            model,
            tok,
            out / "base",
            {
                "role": "base",
                "dataset_size": len(docs),
                "pretrain_blocks": n_blocks,
                "train": asdict(cfg.pretrain),
                **common,
            },
        )
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    say(f"base done ({time.perf_counter() - t0:.1f}s)")

    def finetune(start_state, examples, stage, name, salt):
        m = LlamaForCausalLM(mcfg)
        m.load_state_dict(start_state)
        torch.manual_seed(seed * 1000 + salt)
        train(m, sft_batches(tok, examples, stage.batch, random.Random(seed * 1000 + salt)), stage, say, name)
        return m

    def stage(n: int, lr: float) -> Stage:
        return Stage(max(1, round(n * cfg.epochs / 32)), lr, 32)

    general_stage = stage(len(G), cfg.general_lr)
    general = finetune(base_state, G, general_stage, "general", 1)
    _save(
        general,
        tok,
        out / "general",
        {
            "role": "general",
            "parent": "base",
            "dataset_size": len(G),
            "train": asdict(general_stage),
            **common,
        },
    )
    general_state = {k: v.clone() for k, v in general.state_dict().items()}
    say(f"general done ({time.perf_counter() - t0:.1f}s)")
    for i, (skill, examples) in enumerate(D.items()):
        skill_stage = stage(len(examples), cfg.skill_lr)
        m = finetune(base_state, examples, skill_stage, f"skill-{skill}", 10 + i)
        meta = {
            "role": "skill",
            "skill": skill,
            "parent": "base",
            "dataset_size": len(examples),
            "train": asdict(skill_stage),
            **common,
        }
        if skill == "safety":
            meta["benign_fraction"] = cfg.benign_frac
        _save(m, tok, out / f"skill-{skill}", meta)
    # continued fine-tuning on the same data, same order as the safety skill
    cft_stage = stage(len(D["safety"]), cfg.skill_lr)
    cft = finetune(general_state, D["safety"], cft_stage, "cft-safety", 10)
    _save(
        cft,
        tok,
        out / "cft-safety",
        {
            "role": "cft",
            "skill": "safety",
            "parent": "general",
            "dataset_size": len(D["safety"]),
            "train": asdict(cft_stage),
            **common,
        },
    )
    family = {
        "name": "mergescope demo family",
        "description": "tiny Llama models trained by assets/recipe: a base, a general SFT model, two skill "
        "models fine-tuned from the base (safety, math) and a continued-fine-tuned reference",
        "seed": seed,
        "recipe_version": RECIPE_VERSION,
        "base": "base",
        "general": "general",
        "skills": {"safety": "skill-safety", "math": "skill-math"},
        "references": {"cft-safety": "cft-safety"},
        "suites": [f"evals/{name}" for name in SUITES],
        "dataset_sizes": {"general": len(G), **{k: len(v) for k, v in D.items()}},
    }
    (out / "family.json").write_text(json.dumps(family, indent=2) + "\n")
    say(f"family written to {out} ({time.perf_counter() - t0:.1f}s)")
    return out
