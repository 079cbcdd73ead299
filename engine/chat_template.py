"""The output's chat template from a config's `chat_template`, as mergekit 0.1.5 resolves it.

- Jinja text: used as is.
- A name of a template shipped here (`engine/chat_templates/<name>.jinja`: alpaca, chatml, exaone, llama3,
  mistral — the names mergekit ships; the files are our own Jinja for those standard formats).
- `auto`: the template most of the merged models carry (the first seen wins a tie); none carry one: unchanged.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from engine.errors import ConfigError

TEMPLATE_DIR = Path(__file__).with_name("chat_templates")


def named_templates() -> list[str]:
    return sorted(p.stem for p in TEMPLATE_DIR.glob("*.jinja"))


def model_chat_template(folder: Path) -> str | None:
    """A checkpoint's own template: chat_template.jinja, else tokenizer_config.json's (its 'default' if named)."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    config = folder / "tokenizer_config.json"
    if not config.is_file():
        return None
    try:
        template = json.loads(config.read_text()).get("chat_template")
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{config}: cannot read: {exc}") from exc
    if isinstance(template, list):  # [{name, template}, ...]
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    return template if isinstance(template, str) and template else None


def resolve_chat_template(value: str | None, model_folders: Sequence[Path]) -> str | None:
    """The template text to write, or None to keep the tokenizer's own."""
    if not value:
        return None
    if value == "auto":
        found = [t.strip() for t in (model_chat_template(f) for f in model_folders) if t]
        return Counter(found).most_common(1)[0][0] if found else None
    if len(value) < 256 and "\n" not in value and "{" not in value and (TEMPLATE_DIR / f"{value}.jinja").is_file():
        return (TEMPLATE_DIR / f"{value}.jinja").read_text()
    if len(value) < 20 or "{" not in value:
        raise ConfigError(
            f"chat_template: {value!r} is neither Jinja text nor a known name "
            f"({', '.join(named_templates())}, or auto)"
        )
    return value
