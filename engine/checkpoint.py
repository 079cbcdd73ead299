"""Checkpoints: a local folder or a hub id, read lazily, tensor by tensor (or row range by row range).

Headers are parsed up front (names, shapes, dtypes, byte ranges, checked against the file size, so a truncated
or corrupt shard is reported before any merge work). Tensor data is read with positional reads into fresh
buffers rather than kept memory-mapped: a mapping keeps every page it touched in the process's resident set
until it is closed, so merging through mmap grows RSS to the size of all inputs; explicit reads keep peak memory
at a few tensors whatever the model size, for one copy out of the page cache. The layout read is safetensors'.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.errors import CheckpointError

INDEX_FILE = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
# identity(): weight files up to this size are hashed whole, larger ones by sampled blocks.
FULL_HASH_BYTES = 256 * 2**20
IDENTITY_SAMPLES = 256
IDENTITY_BLOCK = 4096


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: torch.dtype
    file: Path
    offset: int = -1  # absolute byte offset of the data in `file`; -1 for a tensor from a pickle file
    nbytes: int = 0


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


def _read_header(file: Path) -> tuple[dict, int]:
    """The safetensors JSON header and where the data starts, read directly so a corrupt or truncated file gets
    a precise message."""
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
    if not isinstance(header, dict):
        raise CheckpointError(f"{file}: corrupt safetensors header (not a JSON object)")
    header.pop("__metadata__", None)
    try:
        data_len = max((int(v["data_offsets"][1]) for v in header.values()), default=0)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise CheckpointError(f"{file}: corrupt safetensors header ({exc!r})") from exc
    if 8 + header_len + data_len > size:
        raise CheckpointError(
            f"{file}: truncated safetensors file ({size} bytes, header promises {8 + header_len + data_len})"
        )
    return header, 8 + header_len


def _tensor_info(file: Path, name: str, meta: dict, data_start: int) -> TensorInfo:
    """One header entry, validated: a known dtype and a byte range that matches shape x dtype."""
    try:
        dtype = _SAFETENSORS_DTYPES.get(meta["dtype"])
        shape = tuple(int(d) for d in meta["shape"])
        begin, end = (int(x) for x in meta["data_offsets"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{file}: corrupt header entry for tensor {name}: {exc!r}") from exc
    if dtype is None:
        raise CheckpointError(f"{file}: tensor {name} has unsupported dtype {meta['dtype']}")
    numel = 1
    for d in shape:
        numel *= d
    if begin < 0 or end - begin != numel * dtype.itemsize:
        raise CheckpointError(
            f"{file}: corrupt header for tensor {name}: {end - begin} bytes for shape {list(shape)} {dtype}"
        )
    return TensorInfo(shape, dtype, file, data_start + begin, end - begin)


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
        self._handles: dict[Path, int] = {}
        self._pickled: dict[str, torch.Tensor] | None = None
        self._weight_map: dict[str, str] = {}
        files = self._weight_files(allow_pickle)
        for file in files:
            if file.suffix == ".safetensors":
                header, data_start = _read_header(file)
                for tname, meta in header.items():
                    self._check_placement(tname, file)
                    self._infos[tname] = _tensor_info(file, tname, meta, data_start)
            else:
                self._load_pickle(file)
        unread = [t for t in self._weight_map if t not in self._infos]
        if unread:
            raise CheckpointError(
                f"{self.path / INDEX_FILE}: tensor {unread[0]} is mapped to {self._weight_map[unread[0]]}, "
                "which does not hold it"
            )

    # -- discovery -------------------------------------------------------------------------------------------
    def _check_placement(self, tname: str, file: Path) -> None:
        """A tensor must live in exactly one shard, the one the index names: a second copy would be ambiguous
        (which one is the model?), so it is reported instead of one copy silently winning."""
        seen = self._infos.get(tname)
        if seen is not None:
            named = self._weight_map.get(tname)
            hint = f"; the index names {named}" if named else ""
            raise CheckpointError(
                f"{self.path}: tensor {tname} is in two shards, {seen.file.name} and {file.name}{hint}"
            )
        if self._weight_map and self._weight_map.get(tname) != file.name:
            named = self._weight_map.get(tname)
            where = f"maps it to {named}" if named else "does not list it"
            raise CheckpointError(f"{file}: holds tensor {tname}, but {INDEX_FILE} {where}")

    def _weight_files(self, allow_pickle: bool) -> list[Path]:
        index = self.path / INDEX_FILE
        if index.exists():
            weight_map = _read_json(index, required=True).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise CheckpointError(f"{index}: no 'weight_map'")
            self._weight_map = {str(k): str(v) for k, v in weight_map.items()}
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
        """The whole tensor, read from disk now into a fresh buffer the caller owns."""
        info = self.info(name)
        if info.offset < 0:
            return self._pickled[name].to(device)  # type: ignore[index]
        return self._read(info, name, 0, info.shape[0] if info.shape else 1, device)

    def get_rows(
        self,
        name: str,
        start: int,
        stop: int,
        device: str | torch.device = "cpu",
        buffer: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Rows [start, stop) along the first dimension: lets an elementwise merge stream a huge tensor.
        `buffer` (uint8, large enough) is read into instead of a fresh allocation; the result is a view of it."""
        info = self.info(name)
        if info.offset < 0:
            return self._pickled[name][start:stop].to(device)  # type: ignore[index]
        return self._read(info, name, start, stop, device, buffer)

    def _fd(self, file: Path) -> int:
        fd = self._handles.get(file)
        if fd is None:
            try:
                fd = os.open(file, os.O_RDONLY)
            except OSError as exc:
                raise CheckpointError(f"{file}: cannot open: {exc}") from exc
            self._handles[file] = fd
        return fd

    def _read(self, info: TensorInfo, name: str, start: int, stop: int, device, buffer=None) -> torch.Tensor:
        rows = info.shape[0] if info.shape else 1
        row_bytes = info.nbytes // rows if rows else 0
        shape = (stop - start, *info.shape[1:]) if info.shape else ()
        size = (stop - start) * row_bytes
        if buffer is not None and buffer.numel() >= size:
            buffer = buffer[:size]
        else:
            buffer = torch.empty(size, dtype=torch.uint8)
        view = memoryview(buffer.numpy())
        fd = self._fd(info.file)
        position, done = info.offset + start * row_bytes, 0
        while done < len(view):  # a read may return less than asked for
            try:
                got = os.preadv(fd, [view[done:]], position + done)
            except OSError as exc:
                raise CheckpointError(f"{info.file}: cannot read tensor {name}: {exc}") from exc
            if got <= 0:
                raise CheckpointError(f"{info.file}: truncated while reading tensor {name}")
            done += got
        tensor = buffer.view(info.dtype).reshape(shape)
        return tensor if str(device) == "cpu" else tensor.to(device)

    def identity(self) -> str:
        """Stable, content-derived id (the results store's key): config + every weight file's name, size and a
        digest of its bytes.

        Headers alone do not tell two fine-tunes of one base apart (same names, shapes, offsets), so the bytes
        count: whole for files up to `FULL_HASH_BYTES`; above that the first 1 MiB, `IDENTITY_SAMPLES` blocks
        spread over the rest and the last block (fine-tunes differ in virtually every block, so a 15 GB
        checkpoint is identified from ~2 MB)."""
        digest = hashlib.sha256()
        digest.update(json.dumps(self.config, sort_keys=True).encode())
        for file in sorted({i.file for i in self._infos.values()}):
            size = file.stat().st_size
            digest.update(f"{file.name}:{size}".encode())
            with open(file, "rb") as fh:
                if size <= FULL_HASH_BYTES:
                    for chunk in iter(lambda fh=fh: fh.read(2**20), b""):
                        digest.update(chunk)
                    continue
                digest.update(fh.read(2**20))
                for k in range(IDENTITY_SAMPLES):
                    fh.seek(2**20 + (size - 2**20 - IDENTITY_BLOCK) * k // IDENTITY_SAMPLES)
                    digest.update(fh.read(IDENTITY_BLOCK))
                fh.seek(size - IDENTITY_BLOCK)
                digest.update(fh.read(IDENTITY_BLOCK))
        return digest.hexdigest()[:16]

    @property
    def num_layers(self) -> int | None:
        # GPT-2 names it n_layer; a vision-language model keeps its language model's under text_config.
        text = self.config.get("text_config") or {}
        for value in (self.config.get("num_hidden_layers"), self.config.get("n_layer"), text.get("num_hidden_layers")):
            if value is not None:
                return int(value)
        return None

    def close(self) -> None:
        for fd in self._handles.values():
            os.close(fd)
        self._handles.clear()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()

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
