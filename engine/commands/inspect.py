"""`mergescope inspect A B ...`: compatibility report for a set of checkpoints (folders or hub ids)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Open each checkpoint (local folder or hub id from the local cache) and compare them with the first: "
        "architecture, tensor names, shapes, dtypes, vocab size, tied embeddings. Every difference is named. "
        "Exit status 0 when they can be merged, 1 when not."
    )
    parser.add_argument("checkpoints", nargs="*", metavar="CHECKPOINT", help="folder or hub id")
    parser.add_argument(
        "--config", metavar="YAML", help="check the checkpoints a mergekit config names, as that config merges them"
    )
    parser.add_argument("--allow-pickle", action="store_true", help="accept .bin/.pt pickle checkpoints")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    from engine.checkpoint import open_checkpoint
    from engine.compat import compatibility_report

    out = out or sys.stdout
    if args.config:
        from engine.compat import config_report
        from engine.config import load_config
        from engine.merge import open_all

        config = load_config(args.config)
        report = config_report(config, open_all(config, allow_pickle=args.allow_pickle))
    else:
        if not args.checkpoints:
            from engine.errors import ConfigError

            raise ConfigError("inspect: give checkpoints, or --config YAML")
        ckpts = [open_checkpoint(ref, allow_pickle=args.allow_pickle) for ref in args.checkpoints]
        report = compatibility_report(ckpts)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format(), file=out)
    return 0 if report.ok else 1
