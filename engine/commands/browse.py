"""`mergescope browse`: the behaviour table of a stored sweep (one row per item of a suite, one column per ω and
reference model, each cell the stored reply's outcome), the same table the dashboard's behaviour browser shows.
Reads the store only; nothing is regenerated."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from engine.commands.engine_args import DEFAULT_STORE
from engine.errors import ConfigError

SHORT = {"refused": "R", "complied": "C", "correct": "+", "incorrect": "-", "": "."}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store", default=DEFAULT_STORE, help=f"SQLite results store (default {DEFAULT_STORE})"
    )
    parser.add_argument("--sweep", help="sweep id or unique prefix (default: the most recent sweep)")
    parser.add_argument("--suite", help="suite name (default: the first suite with stored replies)")
    parser.add_argument(
        "--filter",
        choices=("all", "flips", "disagree"),
        default="all",
        help="flips: items whose outcome changes along ω (sorted by the first flip); disagree: items where "
        "--a and --b differ",
    )
    parser.add_argument("--a", help="first point label for --filter disagree (e.g. 'ω=0')")
    parser.add_argument("--b", help="second point label for --filter disagree")
    parser.add_argument(
        "--search", default="", help="keep items whose id, prompt or replies contain this text"
    )
    parser.add_argument("--csv", type=Path, metavar="PATH", help="write the table (with replies) as CSV here")


def run(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    from engine.behaviour import stored_behaviour
    from engine.store import ResultStore, atomic_write_text

    out = out or sys.stdout
    if not Path(args.store).is_file():  # opening a missing store would create an empty one
        raise ConfigError(f"--store {args.store}: no such results store")
    with ResultStore(args.store) as store:
        sweep_id, table = stored_behaviour(store, args.sweep, args.suite)
    rows = table.filtered(mode=args.filter, a=args.a, b=args.b, text=args.search)
    if args.csv:
        atomic_write_text(args.csv, table.to_csv(rows, replies=True))
    header, body = table.to_records(rows)
    print(
        f"sweep {sweep_id} · suite {table.suite} ({table.aggregate}) · {len(rows)}/{len(table.rows)} items · "
        + " ".join(f"{k}={v}" for k, v in SHORT.items() if k),
        file=out,
    )
    widths = [max(len(str(x)) for x in [h, *(line[i] for line in body)]) for i, h in enumerate(header[:3])]
    points = header[4:]
    print(
        "  ".join(h.ljust(w) for h, w in zip(header[:3], widths, strict=True)) + "  " + " ".join(points),
        file=out,
    )
    for line in body:
        cells = " ".join(SHORT.get(v, v).center(len(p)) for v, p in zip(line[4:], points, strict=True))
        left = "  ".join(str(x).ljust(w) for x, w in zip(line[:3], widths, strict=True))
        print(f"{left}  {cells}  {line[3][:60]}", file=out)
    if args.csv:
        print(f"wrote {args.csv}", file=out)
    return 0
