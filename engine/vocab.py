"""Vocabulary alignment, mergekit's way: token-indexed rows (embeddings, lm_head) re-indexed to the output
tokenizer's vocabulary by token string before merging, and rows for tokens a model lacks filled in.

Pure functions over vocabularies and tensors; building and saving tokenizers is `engine.tokenizer_build`.
Fill rules (mergekit 0.1.5): a token configured under `tokenizer.tokens` takes its configured source (for every
model when `force`, else only where a model lacks it); an unconfigured token that some model lacks comes from the
one model that has it, else from the base model when the base has it and is among the inputs, else the mean of the
rows of the models that have it; a token no model has is zero. Padding rows (`pad_to_multiple_of`) are each
model's mean row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from engine.errors import ConfigError
from engine.tokenizer_spec import TokenSource, TokenSpec

# Tensor names whose first axis is indexed by token id, across the supported architectures.
VOCAB_SUFFIXES = ("embed_tokens.weight", "lm_head.weight", "wte.weight", "embed_out.weight", "word_embeddings.weight")


def is_vocab_tensor(name: str) -> bool:
    return name.endswith(VOCAB_SUFFIXES)


def vocab_size_of(config: Mapping) -> int | None:
    """config.json's vocabulary size (a VLM keeps it under text_config)."""
    if config.get("vocab_size") is not None:
        return int(config["vocab_size"])
    text = config.get("text_config") or {}
    return int(text["vocab_size"]) if text.get("vocab_size") is not None else None


def permutation(out_vocab: Mapping[str, int], model_vocab: Mapping[str, int], rows: int) -> list[int]:
    """For each output id, the model's row for the same token string, or -1 (absent, or beyond its rows)."""
    perm = [-1] * len(out_vocab)
    for tok, new_id in out_vocab.items():
        old = model_vocab.get(tok)
        if old is not None and old < rows:
            perm[new_id] = old
    return perm


def is_identity(perm: Sequence[int], rows: int) -> bool:
    return len(perm) == rows and all(p == i for i, p in enumerate(perm))


@dataclass(frozen=True)
class Alignment:
    """Everything needed to re-index one tensor's rows for each input model."""

    vocab: Mapping[str, int]  # output token -> id
    perms: Mapping[str, Sequence[int]]  # model ref -> output id -> model row (-1: absent)
    original_vocabs: Mapping[str, Mapping[str, int]]  # model ref -> its own token -> id
    tokens: Mapping[str, TokenSpec]
    base: str | None
    padded_size: int

    def trivial(self, refs: Sequence[str], rows: Mapping[str, int]) -> bool:
        """True when alignment would change nothing (same vocabulary, same ids, nothing configured)."""
        return (
            not self.tokens
            and self.padded_size == len(self.vocab)
            and all(is_identity(self.perms[r], rows[r]) for r in refs)
        )


def _source_row(
    spec: TokenSpec, token: str, token_id: int, tensors: Mapping[str, torch.Tensor], align: Alignment
) -> torch.Tensor:
    source: TokenSource | None = spec.source
    if source is None:
        raise ConfigError(f"tokenizer.tokens[{token!r}]: needs a 'source' (a model, zero or model_token)")
    if source.kind == "zero":
        first = next(iter(tensors.values()))
        return first.new_zeros(first.shape[1:])
    if source.model not in tensors:
        raise ConfigError(
            f"tokenizer.tokens[{token!r}]: source model {source.model} is not an input of this tensor"
        )
    rows = tensors[source.model]
    if source.kind == "model_token":
        row = source.token_id
        if row is None:
            vocab = align.original_vocabs.get(source.model, {})
            if source.token not in vocab:
                raise ConfigError(f"tokenizer.tokens[{token!r}]: token {source.token!r} not in {source.model}")
            row = vocab[source.token]
        if not 0 <= row < rows.shape[0]:
            raise ConfigError(f"tokenizer.tokens[{token!r}]: token_id {row} out of range for {source.model}")
        return rows[row]
    row = align.perms[source.model][token_id]
    if row < 0:
        raise ConfigError(f"tokenizer.tokens[{token!r}]: {source.model} has no such token")
    return rows[row]


def default_rows(tensors: Mapping[str, torch.Tensor], align: Alignment) -> dict[str, torch.Tensor]:
    """Rows for tokens some model lacks (or that are forced): from the configured source, the one model that has
    the token, the base, or the mean of those that have it."""
    refs = list(tensors)
    out: dict[str, torch.Tensor] = {}
    for token, token_id in align.vocab.items():
        spec = align.tokens.get(token)
        present = [r for r in refs if align.perms[r][token_id] >= 0]
        if not (spec and spec.force) and len(present) == len(refs):
            continue
        if spec is None:
            if len(present) == 1:
                spec = TokenSpec(TokenSource("model", model=present[0]))
            elif not present:
                spec = TokenSpec(TokenSource("zero"))
            elif align.base in refs and align.perms[align.base][token_id] >= 0:
                spec = TokenSpec(TokenSource("model", model=align.base))
            else:
                total = tensors[present[0]].new_zeros(tensors[present[0]].shape[1:])
                for r in present:  # summed in mergekit's order
                    total = total + tensors[r][align.perms[r][token_id]]
                out[token] = total / len(present)
                continue
        out[token] = _source_row(spec, token, token_id, tensors, align)
    return out


def align_rows(tensors: Mapping[str, torch.Tensor], align: Alignment) -> dict[str, torch.Tensor]:
    """Each model's tensor re-indexed to the output vocabulary (rows = `align.padded_size`)."""
    defaults = default_rows(tensors, align)
    size = len(align.vocab)
    result = {}
    for ref, old in tensors.items():
        perm = torch.tensor(align.perms[ref], dtype=torch.long)
        new = old.new_zeros((align.padded_size, *old.shape[1:]))
        have = perm >= 0
        new[:size][have] = old[perm[have]]
        for token, row in defaults.items():
            token_id = align.vocab[token]
            spec = align.tokens.get(token)
            if perm[token_id] < 0 or (spec is not None and spec.force):
                new[token_id] = row
        if align.padded_size > size:
            new[size:] = new[:size].mean(dim=0)
        result[ref] = new
    return result


def padded(size: int, multiple: int | None) -> int:
    return -(-size // multiple) * multiple if multiple else size
