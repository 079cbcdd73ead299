"""The `tokenizer:` block of a mergekit config (source, per-token embedding sources, padding), parsed and checked.

mergekit 0.1.5's forms: `source: union | base | <model>` (default union); `tokens: {TOKEN: {source: ..., force:
bool}}` where a token's source is a model (its row for the same token), `{kind: zero}`, or `{kind: model_token,
model: M, token: T}` / `{..., token_id: N}` (a given row of M); `pad_to_multiple_of: N`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.errors import ConfigError


@dataclass(frozen=True)
class TokenSource:
    """Where one output token's embedding row comes from when it is not every model's own row."""

    kind: str  # "model" (the model's row for this token), "zero", "model_token" (a named row of `model`)
    model: str | None = None
    token: str | None = None
    token_id: int | None = None

    def to_dict(self) -> Any:
        if self.kind == "model":
            return self.model
        if self.kind == "zero":
            return {"kind": "zero"}
        out: dict[str, Any] = {"kind": "model_token", "model": self.model}
        out.update({"token": self.token} if self.token is not None else {"token_id": self.token_id})
        return out


@dataclass(frozen=True)
class TokenSpec:
    source: TokenSource | None = None
    force: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.source is not None:
            out["source"] = self.source.to_dict()
        if self.force:
            out["force"] = True
        return out


@dataclass(frozen=True)
class TokenizerSpec:
    source: str = "union"
    tokens: dict[str, TokenSpec] = field(default_factory=dict)
    pad_to_multiple_of: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source}
        if self.tokens:
            out["tokens"] = {tok: spec.to_dict() for tok, spec in self.tokens.items()}
        if self.pad_to_multiple_of:
            out["pad_to_multiple_of"] = self.pad_to_multiple_of
        return out


def _token_source(value: Any, where: str) -> TokenSource | None:
    if value is None:
        return None
    if isinstance(value, str):
        return TokenSource("model", model=value)
    if isinstance(value, Mapping):
        kind = value.get("kind")
        if kind == "zero" and set(value) == {"kind"}:
            return TokenSource("zero")
        if kind == "model_token":
            extra = set(value) - {"kind", "model", "token", "token_id"}
            if extra:
                raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(extra))}")
            if not isinstance(value.get("model"), str):
                raise ConfigError(f"{where}: model_token needs a 'model'")
            has_token, has_id = value.get("token") is not None, value.get("token_id") is not None
            if has_token == has_id:
                raise ConfigError(f"{where}: give exactly one of 'token' or 'token_id'")
            if has_id and (not isinstance(value["token_id"], int) or isinstance(value["token_id"], bool)):
                raise ConfigError(f"{where}: token_id must be an integer, got {value['token_id']!r}")
            return TokenSource(
                "model_token", model=value["model"], token=value.get("token"), token_id=value.get("token_id")
            )
    raise ConfigError(
        f"{where}: expected a model, {{kind: zero}} or {{kind: model_token, model, token | token_id}}, got {value!r}"
    )


def parse_tokenizer(data: Any, where: str) -> TokenizerSpec:
    """The `tokenizer:` mapping as a TokenizerSpec; errors name the offending field."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping")
    extra = set(data) - {"source", "tokens", "pad_to_multiple_of"}
    if extra:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(extra))}")
    source = data.get("source", "union")
    if not isinstance(source, str) or not source:
        raise ConfigError(f"{where}.source: expected union, base or a model, got {source!r}")
    pad = data.get("pad_to_multiple_of")
    if pad is not None and (not isinstance(pad, int) or isinstance(pad, bool) or pad <= 0):
        raise ConfigError(f"{where}.pad_to_multiple_of: expected a positive integer, got {pad!r}")
    tokens_data = data.get("tokens") or {}
    if not isinstance(tokens_data, Mapping):
        raise ConfigError(f"{where}.tokens: expected a mapping of token -> settings")
    tokens = {}
    for tok, spec in tokens_data.items():
        at = f"{where}.tokens[{tok!r}]"
        spec = spec or {}
        if not isinstance(spec, Mapping) or set(spec) - {"source", "force"}:
            raise ConfigError(f"{at}: expected {{source, force}}, got {spec!r}")
        force = spec.get("force", False)
        if not isinstance(force, bool):
            raise ConfigError(f"{at}.force: expected true/false, got {force!r}")
        tokens[str(tok)] = TokenSpec(_token_source(spec.get("source"), f"{at}.source"), force)
    return TokenizerSpec(source, tokens, pad)
