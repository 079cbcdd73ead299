"""Do a suite's prompts fit the model's context? Checked once before a sweep generates anything.

A prompt is measured as every backend serves it: the chat messages rendered with the served tokenizer's chat
template (generation prompt added) and tokenized without extra special tokens (the template writes its own), as
vLLM's `LLM.chat` and the transformers backend both do. One sequence holds the prompt and the reply together, so a
prompt of P tokens leaves `limit - P` tokens for its reply:

- `max_tokens` is clamped per prompt to what fits (vLLM would stop there anyway; transformers would run past the
  model's positions);
- a prompt of `limit` tokens or more cannot be answered at all (vLLM refuses it, mid-sweep): it is not sent, and
  its item counts as failed, recorded as too long in the suite's result.

Both backends take the limit from `context_limit`, so a sweep clamps the same way (and stores the same results)
whichever backend serves it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The longest context an engine is started with (vLLM's max_model_len): the KV cache is sized for it, and on a
# CPU machine a model's full 32k-128k context would not fit in memory. Both backends use the same cap.
MAX_CONTEXT = 2048


# Where a config states its positions (max_position_embeddings; GPT-2's n_positions; others'), as vLLM reads them.
POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "max_sequence_length")


def context_limit(model: str | Path, cap: int = MAX_CONTEXT) -> int:
    """Tokens one sequence (prompt + reply) may hold when `model` is served: the smallest of its config's
    position counts (`max_position_embeddings`, ...), at most `cap` (the cap when the config states none)."""
    try:
        config = json.loads((Path(model) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return cap
    config = config if isinstance(config, dict) else {}
    found = [config.get(k) for k in POSITION_KEYS]
    sizes = [v for v in found if isinstance(v, int) and not isinstance(v, bool) and v > 0]
    return min([*sizes, cap])


def fit_max_tokens(lengths: Sequence[int], max_tokens: int, limit: int) -> list[int | None]:
    """Per prompt: the reply budget that fits (`min(max_tokens, limit - length)`), or None when the prompt leaves
    no room for even one token."""
    return [min(max_tokens, limit - n) if n < limit else None for n in lengths]


@dataclass(frozen=True)
class SuiteFit:
    """How one suite's prompts fit the context: each prompt's token count and its reply budget (None: too long)."""

    suite: str
    limit: int
    requested: int  # the suite's max_tokens
    lengths: tuple[int, ...]
    budgets: tuple[int | None, ...]

    @property
    def too_long(self) -> list[int]:
        """Indices of the prompts that cannot be answered (counted as failed)."""
        return [i for i, b in enumerate(self.budgets) if b is None]

    @property
    def clamped(self) -> list[int]:
        """Indices of the prompts whose reply budget is below the suite's max_tokens."""
        return [i for i, b in enumerate(self.budgets) if b is not None and b < self.requested]

    @property
    def affected(self) -> bool:
        return any(b is None or b < self.requested for b in self.budgets)

    @property
    def longest(self) -> int:
        return max(self.lengths, default=0)

    def record(self) -> dict[str, Any]:
        """What a result records about the fit (only for an affected suite)."""
        budgets = [b for b in self.budgets if b is not None and b < self.requested]
        return {
            "context_limit": self.limit,
            "max_tokens": self.requested,
            "too_long": len(self.too_long),
            "clamped": len(self.clamped),
            "longest_prompt": self.longest,
            "min_budget": min(budgets) if budgets else None,
        }

    def summary(self) -> str:
        """One line for the progress output and the dashboard; empty when every prompt fits as asked."""
        if not self.affected:
            return ""
        n = len(self.lengths)
        parts = []
        if self.too_long:
            parts.append(
                f"{len(self.too_long)} of {n} prompts are too long for the model's {self.limit}-token context "
                f"(longest {self.longest} tokens): they are not generated and count as failed"
            )
        if self.clamped:
            low = min(b for b in self.budgets if b is not None and b < self.requested)
            parts.append(
                f"{len(self.clamped)} of {n} replies are cut to fit (max_tokens {self.requested} -> "
                f"{low}..{max(b for b in self.budgets if b is not None and b < self.requested)})"
            )
        line = f"{self.suite}: " + "; ".join(parts)
        if len(self.too_long) == n:
            line += " — NO prompt fits: its score is 0 at every point; use a model with a longer context or drop it"
        return line


def prompt_lengths(tokenizer: Any, prompts: Sequence[Sequence[Mapping[str, str]]]) -> list[int]:
    """Token count of each chat prompt as served (template rendered with the generation prompt, no extra
    special tokens)."""
    texts = [
        tokenizer.apply_chat_template([dict(m) for m in p], tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]
    if not texts:
        return []
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [len(x) for x in ids]


def load_tokenizer(model: str | Path) -> Any:
    """The served tokenizer of a checkpoint folder (no remote code); quiet about over-long inputs (measuring
    them is the point)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model), trust_remote_code=False)
    tokenizer.model_max_length = 10**9  # no "sequence length is longer than ..." warning while measuring
    return tokenizer


def check_fit(
    model: str | Path, suites: Mapping[str, tuple[Sequence[Sequence[Mapping[str, str]]], int]]
) -> dict[str, SuiteFit]:
    """SuiteFit per suite name, for `suites` = {name: (chat prompts, max_tokens)}, measured with `model`'s
    tokenizer against its `context_limit`."""
    if not suites:
        return {}
    tokenizer = load_tokenizer(model)
    limit = context_limit(model)
    out = {}
    for name, (prompts, max_tokens) in suites.items():
        lengths = prompt_lengths(tokenizer, prompts)
        out[name] = SuiteFit(
            name, limit, max_tokens, tuple(lengths), tuple(fit_max_tokens(lengths, max_tokens, limit))
        )
    return out
