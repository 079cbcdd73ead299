"""`mergescope demo`: regenerate the embedded demo family with its recipe (assets/recipe), optionally verify it.

mergescope demo --out /tmp/family --seed 1          # train base, general, skills, cft (a few minutes on CPU)
mergescope demo --out /tmp/family --seed 1 --verify # then sweep ω with the project's merge + eval code
mergescope demo --verify-only                        # check the shipped family (assets/demo)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Regenerate the demo family (tiny Llama checkpoints + eval suites) with the training recipe in "
        "assets/recipe, deterministically from a seed; --verify sweeps the safety skill's ω and checks the "
        "effects the demo shows (general kept at small ω, refusal rising with ω, CFT over-refusing)."
    )
    parser.add_argument("--out", help="folder to write the family into (required unless --verify-only)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument("--force", action="store_true", help="overwrite a non-empty --out folder")
    parser.add_argument("--verify", action="store_true", help="after training, sweep and check the effects")
    parser.add_argument(
        "--verify-only", action="store_true", help="only verify (the --out folder, else the shipped family)"
    )
    parser.add_argument("--json", help="write the verification's sweep and checks as JSON here")


def run(args: argparse.Namespace) -> int:
    from engine.demo import DEMO_DIR, recipe, recipe_verify

    if args.verify_only:
        root = Path(args.out) if args.out else DEMO_DIR
    else:
        if not args.out:
            raise ConfigError(
                "demo: --out FOLDER is required (the shipped family is not overwritten in place)"
            )
        root = Path(args.out)
        if root.exists() and any(root.iterdir()) and not args.force:
            raise ConfigError(f"demo: {root} is not empty (use --force to overwrite)")
        recipe().build_family(root, seed=args.seed)
    if not (args.verify or args.verify_only):
        return 0
    verify = recipe_verify()
    res = verify.sweep_family(root)
    checks = verify.check_effects(res)
    for k, v in checks.items():
        if k.startswith("effect"):
            print(f"{k}: {'ok' if v else 'NOT SHOWN'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"sweep": res, "checks": checks}, indent=1))
    ok = all(v for k, v in checks.items() if k.startswith("effect"))
    if not ok:
        print(json.dumps(checks, indent=1), file=sys.stderr)
    return 0 if ok else 1
