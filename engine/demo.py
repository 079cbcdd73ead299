"""The embedded demo family: tiny Llama checkpoints the project trains itself (assets/recipe), shipped in
assets/demo/ with their eval suites, so the dashboard, the CLI and the tests work offline out of the box.

`load_family(root)` reads `family.json` in `root`:

    {"base": "base", "general": "general",
     "skills": {"safety": "skill-safety", "math": "skill-math"},
     "references": {"cft-safety": "cft-safety"},
     "suites": ["evals/demo-general", ...],
     "dataset_sizes": {"general": 20000, "safety": 5000, "math": 6000}, "seed": 0, ...}

Folder entries are relative to `root` (absolute paths are kept as they are).
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from engine.errors import CheckpointError

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_DIR = REPO_ROOT / "assets" / "demo"
RECIPE_DIR = REPO_ROOT / "assets" / "recipe"
FAMILY_FILE = "family.json"


@dataclass(frozen=True)
class Family:
    root: Path
    base: Path
    general: Path
    skills: dict[str, Path]
    references: dict[str, Path]
    suites: list[Path]
    dataset_sizes: dict[str, int]
    seed: int | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)  # the whole family.json

    def checkpoints(self) -> dict[str, Path]:
        """Every checkpoint by role: base, general, skill:<name>, reference:<name>."""
        out = {"base": self.base, "general": self.general}
        out.update({f"skill:{k}": v for k, v in self.skills.items()})
        out.update({f"reference:{k}": v for k, v in self.references.items()})
        return out

    def heuristic_weight(self, skill: str) -> float | None:
        """|D|/|G| for one skill (Merge to Learn's heuristic ω)."""
        g, d = self.dataset_sizes.get("general"), self.dataset_sizes.get(skill)
        return d / g if g and d else None


def load_family(root: str | Path = DEMO_DIR) -> Family:
    """Read a family folder (default: the shipped demo family). Raises CheckpointError naming the file and
    field when family.json is missing or names a folder that is not there."""
    root = Path(root)
    path = root / FAMILY_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointError(
            f"demo family {root}: no {FAMILY_FILE} (regenerate it with `mergescope demo --out {root}`)"
        ) from exc
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read ({exc})") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")

    def folder(value: Any, where: str, *, checkpoint: bool = True) -> Path:
        if not isinstance(value, str) or not value:
            raise CheckpointError(f"{path}: field '{where}' must be a folder name")
        p = Path(value)
        p = p if p.is_absolute() else root / p
        marker = p / "config.json" if checkpoint else p
        if not marker.exists():
            raise CheckpointError(f"{path}: field '{where}' names {p}, which is missing")
        return p

    def mapping(key: str) -> dict[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            raise CheckpointError(f"{path}: field '{key}' must be an object")
        return value

    for key in ("base", "general"):
        if key not in data:
            raise CheckpointError(f"{path}: missing field '{key}'")
    skills = {str(k): folder(v, f"skills.{k}") for k, v in mapping("skills").items()}
    if not skills:
        raise CheckpointError(f"{path}: field 'skills' names no skill checkpoint")
    references = {str(k): folder(v, f"references.{k}") for k, v in mapping("references").items()}
    suites_raw = data.get("suites", [])
    if not isinstance(suites_raw, list):
        raise CheckpointError(f"{path}: field 'suites' must be a list")
    suites = [folder(s, f"suites[{i}]", checkpoint=False) for i, s in enumerate(suites_raw)]
    sizes = {}
    for k, v in mapping("dataset_sizes").items():
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise CheckpointError(f"{path}: field 'dataset_sizes.{k}' must be a positive integer")
        sizes[str(k)] = v
    seed = data.get("seed")
    return Family(
        root=root,
        base=folder(data["base"], "base"),
        general=folder(data["general"], "general"),
        skills=skills,
        references=references,
        suites=suites,
        dataset_sizes=sizes,
        seed=seed if isinstance(seed, int) else None,
        meta=data,
    )


def _recipe_module(name: str) -> ModuleType:
    # assets/ is data beside the package, not an installed module: put the repo root on the path to import it.
    root = str(REPO_ROOT)
    if root not in sys.path:
        sys.path.insert(0, root)
    return importlib.import_module(f"assets.recipe.{name}")


def recipe() -> ModuleType:
    """The training recipe module (`assets/recipe/train.py`): `build_family(out_dir, seed)` and friends."""
    return _recipe_module("train")


def recipe_verify() -> ModuleType:
    """The recipe's checker (`assets/recipe/verify.py`): `sweep_family(root)`, `check_effects(result)`."""
    return _recipe_module("verify")
