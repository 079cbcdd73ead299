"""Check that a family checkpoint loads in vLLM as is and gives the same greedy answers as transformers.

    VLLM_CPU_KVCACHE_SPACE=1 python -m assets.recipe.check_vllm [CHECKPOINT_DIR] [-n 24]

Prompts: the first items of each of the family's suites. Exit status 0 when every reply agrees (after strip).
"""

from __future__ import annotations

import argparse
import os
import sys


def transformers_replies(path: str, prompts: list[list[dict]], max_tokens: int) -> list[str]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    out = []
    for p in prompts:  # one at a time: no padding effects
        text = tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
        ids = tok(text, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            gen = model.generate(
                **ids, max_new_tokens=max_tokens, do_sample=False, pad_token_id=tok.pad_token_id
            )
        out.append(tok.decode(gen[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))
    return out


def vllm_replies(path: str, prompts: list[list[dict]], max_tokens: int) -> list[str]:
    from vllm import LLM, SamplingParams

    llm = LLM(model=path, dtype="float32", max_model_len=128, seed=0, enforce_eager=True)
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    res = llm.chat(prompts, params, use_tqdm=False)
    return [r.outputs[0].text for r in res]


def sample_prompts(n: int) -> list[list[dict]]:
    from engine.demo import load_family
    from evals import load_suites

    fam = load_family()
    suites = load_suites([str(p) for p in fam.suites])
    per = max(1, n // len(suites))
    return [p for s in suites for p in s.prompts()[:per]]


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint", nargs="?", default=None)
    ap.add_argument("-n", type=int, default=24)
    ap.add_argument("--max-tokens", type=int, default=16)
    args = ap.parse_args(argv)
    from engine.demo import load_family

    path = str(args.checkpoint or load_family().general)
    prompts = sample_prompts(args.n)
    hf = transformers_replies(path, prompts, args.max_tokens)
    vl = vllm_replies(path, prompts, args.max_tokens)
    bad = 0
    for p, a, b in zip(prompts, hf, vl, strict=True):
        same = a.strip() == b.strip()
        bad += not same
        print(f"{'ok ' if same else 'DIFF'} {p[-1]['content']!r}: hf={a!r} vllm={b!r}")
    print(f"{len(prompts) - bad}/{len(prompts)} agree")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
