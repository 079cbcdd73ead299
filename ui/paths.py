"""The dashboard's path policy: the UI reads and writes only inside its allowed roots (resolved, symlinks
followed); hub ids pass through. Also the page's small path helpers (short display paths, NAME=PATH lines).
The one place the UI decides what a typed path may reach."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from engine import fs
from engine.errors import ConfigError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


@dataclass
class PathPolicy:
    """The UI reads and writes only inside `roots` (resolved, symlinks followed); hub ids pass through."""

    roots: list[Path]

    @classmethod
    def from_dirs(cls, dirs: list[str | os.PathLike]) -> PathPolicy:
        roots = []
        for d in dirs:
            p = Path(d).expanduser().resolve()
            if not p.is_dir():
                raise ConfigError(f"--allowed-root {d}: not a folder")
            roots.append(p)
        return cls(roots)

    def allowed(self, path: Path) -> bool:
        """Inside a root once every symlink is followed (a link that points out is outside). A symlink loop is a
        named error, not a traceback."""
        resolved = fs.resolve(path, "path")
        return any(_inside(resolved, root) for root in self.roots)

    @staticmethod
    def _path(text: str, field: str) -> Path:
        # Text from the page may hold anything: a NUL byte makes every os call raise ValueError.
        if "\x00" in text:
            raise ConfigError(f"{field}: the path contains a NUL character")
        if len(text) > 4096:
            raise ConfigError(f"{field}: a path of {len(text)} characters is too long")
        path = Path(text).expanduser()
        fs.resolve(path, field)  # a symlink loop: a named error here, not "does not exist" or a traceback later
        return path

    def checkpoint(self, text: str, *, field: str) -> str:
        """A checkpoint reference from the page: a local folder inside the roots (returned resolved), or a hub id
        (returned as is) when no such local path exists."""
        text = (text or "").strip()
        if not text:
            raise ConfigError(f"{field}: no checkpoint given")
        path = self._path(text, field)
        if path.exists():
            if not self.allowed(path):
                raise ConfigError(f"{field}: {text} is outside the allowed roots ({self.describe()})")
            return str(path.resolve())
        if _HUB_ID.match(text) and not text.startswith((".", "/")):
            return text
        raise ConfigError(f"{field}: {text} does not exist (and is not a hub id like org/name)")

    def existing(self, text: str, *, field: str) -> Path:
        """A local file or folder that must exist inside the roots (eval suites, configs)."""
        text = (text or "").strip()
        if not text:
            raise ConfigError(f"{field}: no path given")
        path = self._path(text, field)
        if not path.exists():
            raise ConfigError(f"{field}: {text} does not exist")
        if not self.allowed(path):
            raise ConfigError(f"{field}: {text} is outside the allowed roots ({self.describe()})")
        return path.resolve()

    def output_dir(self, text: str, *, field: str) -> Path:
        text = (text or "").strip()
        if not text:
            raise ConfigError(f"{field}: no output folder given")
        path = self._path(text, field)
        if not self.allowed(path):
            raise ConfigError(f"{field}: {text} is outside the allowed roots ({self.describe()})")
        return path.resolve()

    def describe(self) -> str:
        return ", ".join(str(r) for r in self.roots)

    def discover(self, max_depth: int = 4, limit: int = 200) -> list[str]:
        """Checkpoint folders (holding config.json + safetensors) under the roots, for the pickers."""
        found: list[str] = []
        for root in self.roots:
            for dirpath, dirnames, filenames in os.walk(root):
                depth = len(Path(dirpath).relative_to(root).parts)
                dirnames[:] = [d for d in sorted(dirnames) if not d.startswith(".") and d != "node_modules"]
                if depth >= max_depth:
                    dirnames[:] = []
                if "config.json" in filenames and any(f.endswith(".safetensors") for f in filenames):
                    found.append(display_path(Path(dirpath)))
                if len(found) >= limit:
                    return found
        return list(dict.fromkeys(found))


def display_path(path: str | os.PathLike) -> str:
    """Relative to the working directory when below it (shorter on the page), else absolute."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def parse_named_lines(text: str, *, field: str) -> dict[str, str]:
    """`NAME=PATH` per line (blank lines ignored); a bare PATH is named after its folder."""
    out: dict[str, str] = {}
    for line in (text or "").splitlines():
        line = line.strip()
        if not line:
            continue
        name, sep, path = line.partition("=")
        if not sep:
            name, path = Path(line).name, line
        name, path = name.strip(), path.strip()
        if not name or not path:
            raise ConfigError(f"{field}: line {line!r} should be NAME=PATH")
        if name in out:
            raise ConfigError(f"{field}: name {name!r} appears twice")
        out[name] = path
    return out
