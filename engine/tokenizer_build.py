"""The output tokenizer for `tokenizer_source` / `tokenizer:` configs, built as mergekit 0.1.5 builds it, and the
row alignment (`engine.vocab.Alignment`) every input model needs to match it.

Sources: `base` (the base model's tokenizer without ids beyond its config's vocab_size), a model (that model's
tokenizer), `union` (the base's, plus every other model's tokens it lacks, then their added/special tokens);
tokens named under `tokenizer.tokens` are added when missing. Tokenizers load through transformers' AutoTokenizer
(fast tokenizers, never remote code).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.checkpoint import Checkpoint
from engine.config import MergeConfig
from engine.errors import ConfigError
from engine.tokenizer_spec import TokenizerSpec
from engine.vocab import Alignment, padded, permutation, vocab_size_of


def tokenizer_setting(config: MergeConfig) -> TokenizerSpec | None:
    """The config's tokenizer request as one spec (`tokenizer_source: X` is `tokenizer: {source: X}`)."""
    if config.tokenizer is not None:
        return config.tokenizer
    if config.tokenizer_source:
        return TokenizerSpec(source=config.tokenizer_source)
    return None


def _load(path: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), use_fast=True, trust_remote_code=False)
    except Exception as exc:  # transformers raises many kinds; the message names the folder
        raise ConfigError(f"tokenizer_source/tokenizer: {path}: cannot load its tokenizer ({exc})") from exc


def _strip(tokenizer: Any, rows: int) -> Any:
    """The tokenizer without ids >= rows (ids with no embedding row), as mergekit strips the base's."""
    unused = [tok for tok, idx in tokenizer.get_vocab().items() if idx >= rows]
    if not unused:
        return tokenizer
    import json

    from tokenizers import Tokenizer

    data = json.loads(tokenizer._tokenizer.to_str())
    if data["model"]["type"] not in ("BPE", "WordLevel"):
        raise ConfigError(f"tokenizer has ids beyond vocab_size and a {data['model']['type']} model: cannot strip")
    data["added_tokens"] = [t for t in data.get("added_tokens", []) if t["id"] < rows]
    drop = set(unused)
    for tok in unused:
        data["model"]["vocab"].pop(tok, None)
    if "merges" in data["model"]:
        data["model"]["merges"] = [
            m for m in data["model"]["merges"] if not set(m.split(" ") if isinstance(m, str) else m) & drop
        ]
    tokenizer._tokenizer = Tokenizer.from_str(json.dumps(data))
    return tokenizer


def _copy(tokenizer: Any) -> Any:
    # A private copy through save/load, so adding tokens never touches a tokenizer still in use.
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        return _load(Path(tmp))


def _union(base_tok: Any, toks: Mapping[str, Any], rows: Mapping[str, int]) -> Any:
    out = _copy(base_tok)
    base_vocab = base_tok.get_vocab()
    plain: dict[str, None] = {}
    added: dict[str, Any] = {}
    for ref, tok in toks.items():
        specials = tok.added_tokens_decoder
        special_names = {info.content for info in specials.values()}
        for token, idx in tok.get_vocab().items():
            if idx < rows[ref] and token not in special_names:
                plain.setdefault(token)
        for idx, info in specials.items():
            if idx < rows[ref]:
                added.setdefault(info.content, info)
    for token in plain:
        if token not in added and token not in base_vocab:
            out.add_tokens(token)
    for info in added.values():
        out.add_tokens(info)
    return out


# The files that define a vocabulary (tokenizer_config.json and the chat template do not change token ids).
VOCAB_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json")


def tokenizer_length(folder: Path) -> int | None:
    """The number of tokens (added ones included) of a folder's tokenizer.json, read without transformers."""
    file = Path(folder) / "tokenizer.json"
    if not file.is_file():
        return None
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(file)).get_vocab_size(with_added_tokens=True)
    except Exception as exc:  # the tokenizers library raises plain Exceptions for malformed files
        raise ConfigError(f"{file}: cannot read: {exc}") from exc


def _vocab_fingerprint(folder: Path) -> tuple[bytes | None, ...]:
    return tuple((folder / f).read_bytes() if (folder / f).is_file() else None for f in VOCAB_FILES)


@dataclass
class BuiltTokenizer:
    """The output tokenizer: a built one (`tokenizer`, with the row `alignment`), or, when every model shares the
    source's vocabulary id for id, just the folder whose tokenizer files are copied."""

    tokenizer: Any  # a transformers tokenizer, saved into the output folder; None: copy from `folder`
    alignment: Alignment | None
    size: int
    folder: Path | None = None

    @property
    def vocab_size(self) -> int:
        return self.size


def _shared_vocabulary(
    spec: TokenizerSpec, source: Path, refs: list[str], ckpts: Mapping[str, Checkpoint]
) -> BuiltTokenizer | None:
    """The no-op case (the usual one for fine-tunes of one base): nothing configured per token, and every model's
    vocabulary files equal the source's and hold exactly its vocab_size tokens. Then no row moves, and the
    tokenizer files are copied rather than rebuilt (no transformers load on every sweep point)."""
    if spec.tokens or spec.pad_to_multiple_of:
        return None
    length = tokenizer_length(source)
    if length is None:
        return None
    fingerprint = _vocab_fingerprint(source)
    for ref in refs:
        ckpt = ckpts[ref]
        if vocab_size_of(ckpt.config) != length or _vocab_fingerprint(ckpt.path) != fingerprint:
            return None
    return BuiltTokenizer(None, None, length, source)


def build_tokenizer(config: MergeConfig, ckpts: Mapping[str, Checkpoint]) -> BuiltTokenizer | None:
    """The output tokenizer and alignment for a config with a tokenizer setting; None without one."""
    spec = tokenizer_setting(config)
    if spec is None:
        return None
    refs = config.refs()
    base_ref = config.base_model or refs[0]
    if spec.source in ("base", "union"):
        source_folder = ckpts[base_ref].path
    else:
        source_folder = ckpts[spec.source].path if spec.source in ckpts else Path(spec.source)
    shared = _shared_vocabulary(spec, source_folder, refs, ckpts)
    if shared is not None:
        return shared
    rows = {}
    for ref in refs:
        size = vocab_size_of(ckpts[ref].config)
        rows[ref] = size
    base_tok = _strip(_load(ckpts[base_ref].path), rows[base_ref] or 1 << 62)
    toks = {base_ref: base_tok}
    toks.update({ref: _load(ckpts[ref].path) for ref in refs if ref != base_ref})
    for ref, tok in toks.items():
        rows[ref] = rows[ref] or len(tok.get_vocab())
    if spec.source == "base":
        out = base_tok
    elif spec.source == "union":
        out = _union(base_tok, toks, rows)
    else:
        out = _load(source_folder)
    missing = [tok for tok in spec.tokens if tok not in out.get_vocab()]
    if missing:
        out = _copy(out) if out is base_tok or out in toks.values() else out
        for tok in missing:
            out.add_tokens(tok)
    vocab = dict(out.get_vocab())
    ids = sorted(vocab.values())
    if ids != list(range(len(ids))):
        raise ConfigError("tokenizer: the output vocabulary's ids are not contiguous from 0")
    perms = {ref: permutation(vocab, toks[ref].get_vocab(), rows[ref]) for ref in refs}
    alignment = Alignment(
        vocab=vocab,
        perms=perms,
        original_vocabs={ref: dict(tok.get_vocab()) for ref, tok in toks.items()},
        tokens=dict(spec.tokens),
        base=config.base_model,
        padded_size=padded(len(vocab), spec.pad_to_multiple_of),
    )
    return BuiltTokenizer(out, alignment, alignment.padded_size)
