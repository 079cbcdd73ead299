"""The README's demo sweep (`mergescope sweep`) on several backends in one run: where the time goes, and the ratio.

    VLLM_CPU_KVCACHE_SPACE=1 .venv/bin/python bench/demo_sweep_bench.py [--backends auto,vllm]
        [--repeat 1] [--json FIGURES.json]

Each entry of `--backends` is `KIND` or `KIND:DTYPE` (e.g. `transformers:float32`) and runs the command exactly as a
user types it — `python -m engine.cli sweep --backend KIND [--dtype DTYPE]` on the demo family (15 points: 4
references, ω = 0..1 by 0.1, the heuristic point; 4 suites, 760 prompts a point) — in its own process with a fresh
results store, so nothing is reused between entries. Per entry: the whole command's wall time (interpreter start
and imports included), the engine start, the sweep (from the command's own "sweep done in"), the sum over points
of swap, generate and score, and the rest (imports, prepare, store). The load average before and after each entry
is printed beside it: on a shared machine the figures move with it, so only ratios within one run compare.

Target (issue 12): `--backend auto` >= 4x faster than vLLM on the same machine, in the same run (the issue's
figure was 128 s with vLLM on a 2-core AVX2 CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEEDUP_TARGET = 4.0
_POINT = re.compile(r"swap ([\d.]+)s gen ([\d.]+)s score ([\d.]+)s")
_READY = re.compile(r"(\S+) backend ready in ([\d.]+)s \(serving dtype (\w+)\)")
_DONE = re.compile(r"sweep done in ([\d.]+)s")


def parse_log(text: str) -> dict:
    """The figures of one `mergescope sweep` stderr: engine start, dtype, sweep time, per-point sums."""
    ready, done = _READY.search(text), _DONE.search(text)
    if ready is None or done is None:
        raise SystemExit(f"the sweep's output lacks its ready/done lines:\n{text[-3000:]}")
    points = [tuple(float(x) for x in m.groups()) for m in _POINT.finditer(text)]
    return {
        "backend": ready.group(1),
        "engine_start_s": float(ready.group(2)),
        "dtype": ready.group(3),
        "sweep_s": float(done.group(1)),
        "points": len(points),
        "swap_s": sum(p[0] for p in points),
        "generate_s": sum(p[1] for p in points),
        "score_s": sum(p[2] for p in points),
    }


def run_entry(entry: str, work: Path) -> dict:
    kind, _, dtype = entry.partition(":")
    store = work / f"{entry.replace(':', '-')}-{time.monotonic_ns()}.db"
    command = [sys.executable, "-m", "engine.cli", "sweep", "--backend", kind, "--store", str(store)]
    if dtype:
        command += ["--dtype", dtype]
    env = dict(os.environ, PYTHONPATH=str(ROOT), VLLM_CPU_KVCACHE_SPACE=os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"))
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    row = {"entry": entry, "wall_s": wall, **parse_log(proc.stderr)}
    row["other_s"] = wall - row["engine_start_s"] - row["swap_s"] - row["generate_s"] - row["score_s"]
    row["load"] = (load_before, os.getloadavg()[0])
    print(
        f"  {entry}: {wall:.1f}s wall ({row['backend']}, {row['dtype']}): engine start {row['engine_start_s']:.1f}s, "
        f"{row['points']} points: swap {row['swap_s']:.2f}s generate {row['generate_s']:.2f}s score "
        f"{row['score_s']:.2f}s; rest {row['other_s']:.1f}s; load {row['load'][0]:.1f} -> {row['load'][1]:.1f}",
        flush=True,
    )
    return row


def table(rows: list[dict]) -> str:
    header = ("entry", "backend (dtype)", "wall", "engine start", "swap", "generate", "score", "rest", "load")
    lines = [header]
    for r in rows:
        lines.append(
            (
                r["entry"],
                f"{r['backend']} ({r['dtype']})",
                f"{r['wall_s']:.1f} s",
                f"{r['engine_start_s']:.1f} s",
                f"{r['swap_s']:.2f} s",
                f"{r['generate_s']:.2f} s",
                f"{r['score_s']:.2f} s",
                f"{r['other_s']:.1f} s",
                f"{r['load'][0]:.1f}-{r['load'][1]:.1f}",
            )
        )
    from engine.commands.table import aligned_lines

    return "\n".join(aligned_lines(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="auto,vllm", help="comma list of KIND[:DTYPE] (default auto,vllm)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each entry, interleaved (default 1)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    entries = [e.strip() for e in args.backends.split(",") if e.strip()]
    rows = []
    with tempfile.TemporaryDirectory(prefix="demo-sweep-bench-") as tmp:
        for round_ in range(args.repeat):
            print(f"round {round_ + 1} of {args.repeat}", flush=True)
            rows += [run_entry(entry, Path(tmp)) for entry in entries]
    print("\n" + table(rows))
    best = {e: min(r["wall_s"] for r in rows if r["entry"] == e) for e in entries}
    if "vllm" in best:
        for entry, wall in best.items():
            if entry != "vllm":
                ratio = best["vllm"] / wall
                verdict = "met" if ratio >= SPEEDUP_TARGET else "NOT met"
                print(
                    f"{entry}: {ratio:.1f}x faster than vllm in this run ({wall:.1f}s vs {best['vllm']:.1f}s, best "
                    f"of {args.repeat}; target >= {SPEEDUP_TARGET:.0f}x: {verdict})"
                )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
