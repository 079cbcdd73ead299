"""`mergescope merge CONFIG.yml --out DIR`: run a mergekit YAML config and write a loadable model folder.

The folder (sharded safetensors + index, config.json, tokenizer files and chat template, generation_config.json,
README.md model card holding the YAML, the YAML itself) is written under a temporary name beside DIR and renamed
at the end: a failure or Ctrl-C leaves neither DIR nor the temporary folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import time
from pathlib import Path
from typing import TextIO

from engine.errors import ConfigError, MergeError

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def parse_size(text: str) -> int:
    """'2GB', '500MB', '1.5G', '1048576' -> bytes (KiB/MiB/GiB are powers of two)."""
    match = _SIZE_RE.match(str(text))
    if not match:
        raise ConfigError(f"--shard-size: cannot read {text!r} (examples: 2GB, 500MB, 1073741824)")
    number, unit, suffix = float(match.group(1)), match.group(2).upper(), (match.group(3) or "")
    scale = 1024 ** "KMGT".index(unit) * 1024 if unit and suffix.lower() == "ib" else _UNITS[unit]
    size = int(number * scale)
    if size <= 0:
        raise ConfigError(f"--shard-size: must be positive, got {text!r}")
    return size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Merge checkpoints as described by a mergekit YAML config (accepted as is) and write the merged model "
        "to DIR atomically: sharded safetensors + index, config, tokenizer and chat template, generation config, "
        "a model card holding the YAML, and the YAML itself."
    )
    parser.add_argument("config", metavar="CONFIG.yml", help="mergekit YAML config")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (must not exist)")
    parser.add_argument("--device", default="cpu", help="device to merge on: cpu (default), cuda, cuda:1 ...")
    parser.add_argument(
        "--dtype",
        choices=["float32", "float16", "bfloat16", "float64"],
        help="output dtype (default: the config's out_dtype, else its dtype, else the inputs' dtype)",
    )
    parser.add_argument(
        "--compute-dtype",
        choices=["float32", "float16", "bfloat16", "float64"],
        help="compute in this dtype instead of the config's dtype (mergekit's default: the config's dtype, else the "
        "inputs'); e.g. float32 for a more precise half-precision merge. Same as the config field compute_dtype",
    )
    parser.add_argument("--shard-size", default="2GB", help="maximum shard size, e.g. 2GB, 500MB (default 2GB)")
    parser.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="accept .bin/.pt pickle checkpoints (loaded with torch.load(weights_only=True))",
    )
    parser.add_argument(
        "--seed", type=int, default=0,
        help="seed of the random methods (DARE, DELLA); the same N as mergekit's --random-seed draws its masks",
    )  # fmt: skip
    parser.add_argument(
        "--threads",
        type=int,
        default=max(1, min(8, (os.cpu_count() or 2) // 2)),
        help="CPU threads for tensor math (default: half the cores, at most 8). Most of a merge is memory-bound; "
        "more threads than free cores makes it much slower",
    )
    parser.add_argument(
        "--strict", action="store_true",
        help="refuse a config with fields or parameters the merge does not read (mergekit ignores them, and so "
        "does this command by default, with a warning naming each)",
    )  # fmt: skip
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")


class Progress:
    """Tensor-count progress on stderr: one updating line on a terminal, a line per ~10% otherwise."""

    def __init__(self, stream: TextIO, quiet: bool) -> None:
        self.stream, self.quiet = stream, quiet
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.start = time.perf_counter()
        self.last_decile = -1

    def __call__(self, done: int, total: int) -> None:
        if self.quiet:
            return
        line = f"merged {done}/{total} tensors ({time.perf_counter() - self.start:.1f}s)"
        if self.tty:
            self.stream.write("\r" + line + ("\n" if done == total else ""))
            self.stream.flush()
            return
        decile = done * 10 // max(total, 1)
        if decile != self.last_decile or done == total:
            self.last_decile = decile
            print(line, file=self.stream, flush=True)


def run(args: argparse.Namespace, *, err: TextIO | None = None) -> int:
    from engine.config import load_config
    from engine.export import export_merge

    err = err or sys.stderr
    shard_size = parse_size(args.shard_size)
    import torch

    try:
        device = torch.device(args.device)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"--device: {exc}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MergeError(f"--device {args.device}: no CUDA device is available here")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {args.device}: only cpu and cuda are supported")
    config = load_config(Path(args.config), strict=args.strict)  # always a file here, whatever its suffix
    if args.compute_dtype:
        config = dataclasses.replace(config, compute_dtype=args.compute_dtype)
    if args.threads < 1:
        raise ConfigError(f"--threads: must be at least 1, got {args.threads}")
    # Process-wide settings, restored afterwards (the command also runs in-process, e.g. from tests).
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    try:
        out = export_merge(
            config,
            args.out,
            device=args.device,
            dtype=args.dtype,
            shard_size=shard_size,
            overwrite=args.overwrite,
            allow_pickle=args.allow_pickle,
            seed=args.seed,
            progress=Progress(err, args.quiet),
        )
    finally:
        torch.set_num_threads(threads)
    if not args.quiet:
        print(f"wrote {out} in {time.perf_counter() - start:.1f}s", file=err)
    return 0
