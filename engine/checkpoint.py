"""Checkpoints: a local folder or a hub id, read tensor by tensor through memory-mapped `safe_open`."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from engine.errors import CheckpointError

INDEX_FILE = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: torch.dtype
    file: Path


_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def _read_header(file: Path) -> dict:
    """The safetensors JSON header, read directly so a corrupt or truncated file gets a precise message."""
    try:
        size = file.stat().st_size
        with open(file, "rb") as fh:
            raw_len = fh.read(8)
            if len(raw_len) < 8:
                raise CheckpointError(f"{file}: truncated safetensors file (no header)")
            header_len = int.from_bytes(raw_len, "little")
            if header_len <= 0 or 8 + header_len > size:
                raise CheckpointError(
                    f"{file}: corrupt safetensors header (length {header_len}, file {size} bytes)"
                )
            header = json.loads(fh.read(header_len))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{file}: cannot read safetensors header: {exc}") from exc
    header.pop("__metadata__", None)
    data_len = max((int(v["data_offsets"][1]) for v in header.values()), default=0)
    if 8 + header_len + data_len > size:
        raise CheckpointError(
            f"{file}: truncated safetensors file ({size} bytes, header promises {8 + header_len + data_len})"
        )
    return header


class Checkpoint:
    """A model checkpoint folder. Tensors are read lazily, one at a time; nothing is loaded up front."""

    def __init__(self, path: Path, name: str | None = None, *, allow_pickle: bool = False) -> None:
        self.path = Path(path)
        self.name = name or self.path.name
        if not self.path.is_dir():
            raise CheckpointError(f"{self.path}: not a checkpoint folder")
        self.config = _read_json(self.path / "config.json", required=False)
        self.metadata = _read_json(self.path / "mergescope.json", required=False)
        self._infos: dict[str, TensorInfo] = {}
        self._handles: dict[Path, object] = {}
        self._pickled: dict[str, torch.Tensor] | None = None
        files = self._weight_files(allow_pickle)
        for file in files:
            if file.suffix == ".safetensors":
                for tname, meta in _read_header(file).items():
                    dtype = _SAFETENSORS_DTYPES.get(meta["dtype"])
                    if dtype is None:
                        raise CheckpointError(f"{file}: tensor {tname} has unsupported dtype {meta['dtype']}")
                    self._infos[tname] = TensorInfo(tuple(meta["shape"]), dtype, file)
            else:
                self._load_pickle(file)

    # -- discovery -------------------------------------------------------------------------------------------
    def _weight_files(self, allow_pickle: bool) -> list[Path]:
        index = self.path / INDEX_FILE
        if index.exists():
            weight_map = _read_json(index, required=True).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise CheckpointError(f"{index}: no 'weight_map'")
            files = sorted({self.path / f for f in weight_map.values()})
            missing = [f for f in files if not f.exists()]
            if missing:
                raise CheckpointError(f"{index}: shard {missing[0].name} is missing")
            return files
        files = sorted(self.path.glob("*.safetensors"))
        if files:
            return files
        pickled = sorted(f for f in self.path.iterdir() if f.suffix in PICKLE_SUFFIXES)
        if pickled:
            if not allow_pickle:
                raise CheckpointError(
                    f"{self.path}: only pickle weights ({pickled[0].name}); pickle files can run arbitrary code "
                    "when loaded, so they are refused. Convert to safetensors, or opt in with --allow-pickle "
                    "(loaded with torch.load(weights_only=True))."
                )
            return pickled
        raise CheckpointError(f"{self.path}: no *.safetensors weights found")

    def _load_pickle(self, file: Path) -> None:
        try:
            state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:  # torch raises many kinds here
            raise CheckpointError(f"{file}: cannot load pickle weights: {exc}") from exc
        self._pickled = self._pickled or {}
        for tname, tensor in state.items():
            self._pickled[tname] = tensor
            self._infos[tname] = TensorInfo(tuple(tensor.shape), tensor.dtype, file)

    # -- access ----------------------------------------------------------------------------------------------
    def tensor_names(self) -> list[str]:
        return list(self._infos)

    def info(self, name: str) -> TensorInfo:
        try:
            return self._infos[name]
        except KeyError:
            raise CheckpointError(f"{self.path}: no tensor named {name}") from None

    def get(self, name: str, device: str | torch.device = "cpu") -> torch.Tensor:
        info = self.info(name)
        if self._pickled is not None and name in self._pickled:
            return self._pickled[name].to(device)
        handle = self._handles.get(info.file)
        if handle is None:
            try:
                handle = safe_open(str(info.file), framework="pt", device="cpu")
            except Exception as exc:
                raise CheckpointError(f"{info.file}: cannot open: {exc}") from exc
            self._handles[info.file] = handle
        try:
            tensor = handle.get_tensor(name)
        except Exception as exc:
            raise CheckpointError(f"{info.file}: cannot read tensor {name}: {exc}") from exc
        return tensor if str(device) == "cpu" else tensor.to(device, non_blocking=True)

    def identity(self) -> str:
        """Stable, content-derived id: config + every weight file's header and size (cheap: no tensor data)."""
        digest = hashlib.sha256()
        digest.update(json.dumps(self.config, sort_keys=True).encode())
        for file in sorted({i.file for i in self._infos.values()}):
            digest.update(file.name.encode())
            digest.update(str(file.stat().st_size).encode())
            if file.suffix == ".safetensors":
                with open(file, "rb") as fh:
                    header_len = int.from_bytes(fh.read(8), "little")
                    digest.update(fh.read(header_len))
        return digest.hexdigest()[:16]

    @property
    def num_layers(self) -> int | None:
        value = self.config.get("num_hidden_layers")
        return int(value) if value is not None else None

    def close(self) -> None:
        self._handles.clear()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.path)!r}, tensors={len(self._infos)})"


def _read_json(path: Path, *, required: bool) -> dict:
    if not path.exists():
        if required:
            raise CheckpointError(f"{path}: missing")
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid JSON: {exc}") from exc


def open_checkpoint(ref: str | os.PathLike, *, allow_pickle: bool = False) -> Checkpoint:
    """Open a local folder, or a hub id (from the local cache when offline; a clear error when neither works)."""
    path = Path(ref).expanduser()
    if path.exists():
        return Checkpoint(path, allow_pickle=allow_pickle)
    text = str(ref)
    looks_like_hub_id = text.count("/") == 1 and not text.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        raise CheckpointError(f"{ref}: no such checkpoint folder")
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]
    if allow_pickle:
        patterns.append("*.bin")
    try:
        local = snapshot_download(text, allow_patterns=patterns, local_files_only=True)
    except Exception:
        try:
            local = snapshot_download(text, allow_patterns=patterns)
        except Exception as exc:
            raise CheckpointError(
                f"{ref}: not a local folder, not in the Hugging Face cache, and the hub is unreachable ({exc})"
            ) from exc
    return Checkpoint(Path(local), name=text, allow_pickle=allow_pickle)
