"""Arguments shared by every command that serves models (`sweep`, `ui`): one definition, one default."""

from __future__ import annotations

import argparse
from typing import Any

from engine.backends import BACKEND_KINDS
from engine.backends.machine import RESIDENT_MODES, SERVING_DTYPES

DEFAULT_STORE = "mergescope-results.db"


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """--store, --backend, --device, --dtype, --resident-swaps and vLLM's parallel sizes."""
    parser.add_argument(
        "--store", default=DEFAULT_STORE, help=f"SQLite results store (default {DEFAULT_STORE})"
    )
    parser.add_argument(
        "--backend",
        choices=BACKEND_KINDS,
        default="auto",
        help="serving engine (default auto: vllm where a GPU serves, transformers on a CPU-only machine)",
    )
    parser.add_argument("--device", default=None, help="engine device (default: the backend's choice)")
    parser.add_argument(
        "--dtype",
        choices=SERVING_DTYPES,
        default="auto",
        help="serving dtype (default auto: float32 on a CPU without native bf16, else the checkpoint's / bf16)",
    )
    parser.add_argument(
        "--resident-swaps",
        choices=RESIDENT_MODES,
        default="auto",
        help="keep the swept checkpoints in engine memory between swaps (default auto: when they fit)",
    )
    parser.add_argument(
        "--tensor-parallel-size",
        type=int,
        default=1,
        metavar="N",
        help="vLLM tensor parallel size (default 1)",
    )
    parser.add_argument(
        "--pipeline-parallel-size",
        type=int,
        default=1,
        metavar="N",
        help="vLLM pipeline parallel size (default 1)",
    )


def backend_options(args: argparse.Namespace) -> dict[str, Any]:
    """`make_backend` keyword arguments from the parsed engine arguments (kind and device included)."""
    return {
        "kind": args.backend,
        "device": args.device,
        "dtype": args.dtype,
        "resident": args.resident_swaps,
        "tensor_parallel_size": args.tensor_parallel_size,
        "pipeline_parallel_size": args.pipeline_parallel_size,
    }
