"""Arguments shared by every command that serves models (`sweep`, `ui`): one definition, one default."""

from __future__ import annotations

import argparse

from engine.backends import BACKEND_KINDS

DEFAULT_STORE = "mergescope-results.db"


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """--store, --backend and --device."""
    parser.add_argument(
        "--store", default=DEFAULT_STORE, help=f"SQLite results store (default {DEFAULT_STORE})"
    )
    parser.add_argument(
        "--backend", choices=BACKEND_KINDS, default="auto", help="serving engine (default auto)"
    )
    parser.add_argument("--device", default=None, help="engine device (default: the backend's choice)")
