"""Open checkpoint handles kept across swaps, so a swap reads tensors, not headers.

Both backends merge many variants of the same few checkpoints; re-opening them per swap would re-parse every
safetensors header each time. A handle is reused only while the folder's weight files are unchanged (name, size,
mtime), so a checkpoint re-exported under the same path is opened afresh.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.checkpoint import Checkpoint


def _signature(path: Path) -> tuple:
    if not path.is_dir():
        return ()
    files = sorted(path.glob("*.safetensors"))
    return tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files)


class CheckpointCache:
    def __init__(self) -> None:
        self._open: dict[str, tuple[tuple, Checkpoint]] = {}

    def get(self, ref: str | os.PathLike) -> Checkpoint:
        from engine.checkpoint import open_checkpoint

        key = str(ref)
        signature = _signature(Path(ref))
        hit = self._open.get(key)
        if hit is not None and hit[0] == signature:
            return hit[1]
        ckpt = open_checkpoint(ref)
        self._open[key] = (signature, ckpt)
        return ckpt

    def for_refs(self, refs: list[str]) -> dict[str, Checkpoint]:
        """Handles for every checkpoint a merge config names (see `config_refs`)."""
        return {ref: self.get(ref) for ref in refs}
