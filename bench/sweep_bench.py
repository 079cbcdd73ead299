"""Sweep benchmark on the demo family: in-place weight swaps vs the naive path, measured in the same run.

    VLLM_CPU_KVCACHE_SPACE=1 .venv/bin/python bench/sweep_bench.py [--points 11] [--naive-points 2]
        [--backend vllm|transformers|auto] [--family DIR] [--skill NAME] [--json FIGURES.json]

Swap path: one engine started on the general model; an N-point ω sweep (0..1) over all the family's suites, every
prompt of every suite in one batched call per point, each point swapped in place; time per point split into
swap / generate / score, and the whole sweep's wall time including the engine start.
Naive path: for a few of the same points, write the merged checkpoint to disk and start a new engine on it, then
generate the same prompts; its per-point cost is measured on those points and extrapolated to the whole sweep
(the output says so).
Targets (2-core CPU): whole sweep <= 120 s including engine start; a swap >= 20x faster than what the naive path
pays per point instead (write + engine start).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

SWEEP_TARGET_S = 120.0
SWAP_RATIO_TARGET = 20.0


def _sweep_spec(family, points: int, skill: str | None):
    from engine.sweep import SweepSpec

    skill = skill or next(iter(family.skills))
    if skill not in family.skills:
        raise SystemExit(f"unknown skill {skill!r}; the family has {sorted(family.skills)}")
    weights = [round(i / (points - 1), 6) for i in range(points)]
    return SweepSpec(
        base=str(family.base),
        general=str(family.general),
        skills={skill: str(family.skills[skill])},
        weights=weights,
        suites=[str(p) for p in family.suites],
        standard_references=False,
        heuristic_point=False,
    )


def swap_path(spec, backend_kind: str) -> dict:
    from engine.backends import make_backend
    from engine.store import ResultStore
    from engine.sweep import prepare_sweep, run_sweep

    begin = time.perf_counter()
    prepared = prepare_sweep(spec)
    prepare_s = time.perf_counter() - begin
    with tempfile.TemporaryDirectory() as tmp, ResultStore(Path(tmp) / "bench.db") as store:
        start = time.perf_counter()
        backend = make_backend(spec.general, kind=backend_kind)
        engine_start = time.perf_counter() - start
        try:
            results = []
            for r in run_sweep(prepared, backend, store):
                t = r.timings
                print(
                    f"  {r.label:<8} swap {t['swap_s']:.3f}s  generate {t['generate_s']:.2f}s  "
                    f"score {t['score_s']:.3f}s",
                    flush=True,
                )
                results.append(r)
            total = time.perf_counter() - begin
        finally:
            backend.close()
    return {
        "backend": backend.kind,
        "prepare_s": prepare_s,
        "engine_start_s": engine_start,
        "total_s": total,
        "prompts_per_point": sum(len(s.items) for s in prepared.suites),
        "suites": [s.name for s in prepared.suites],
        "points": [{"label": r.label, **r.timings} for r in results],
        "prepared": prepared,
        "replies": {r.label: [x for sr in r.suite_results for x in sr.replies] for r in results},
    }


def naive_path(prepared, backend_kind: str, count: int) -> list[dict]:
    """Write each merged variant to disk and start a fresh engine on it, as a sweep without swaps must."""
    from engine.backends import make_backend
    from engine.export import export_merge
    from engine.sweep import suite_settings

    prompts, settings = [], []
    for suite in prepared.suites:
        prompts += suite.prompts()
        settings += [suite_settings(suite, prepared.spec.settings)] * len(suite.items)
    variants = [p for p in prepared.points if p.kind == "variant"]
    picks = [variants[round(i * (len(variants) - 1) / max(count - 1, 1))] for i in range(count)]
    rows = []
    for point in picks:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            out = export_merge(point.config, Path(tmp) / "merged")
            t1 = time.perf_counter()
            backend = make_backend(out, kind=backend_kind)
            t2 = time.perf_counter()
            try:
                replies = backend.generate(None, prompts, settings)
                t3 = time.perf_counter()
            finally:
                backend.close()  # not timed: the swap path's close is not timed either
        rows.append(
            {
                "label": point.label,
                "write_s": t1 - t0,
                "start_s": t2 - t1,
                "generate_s": t3 - t2,
                "replies": replies,
            }
        )
        print(
            f"  naive {point.label}: write {t1 - t0:.2f}s  engine start {t2 - t1:.1f}s  generate {t3 - t2:.2f}s",
            flush=True,
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--points", type=int, default=11, help="ω points from 0 to 1 (default 11)")
    parser.add_argument("--naive-points", type=int, default=2, help="naive points to measure (0: skip)")
    parser.add_argument("--backend", default="vllm", choices=["auto", "vllm", "transformers"])
    parser.add_argument("--family", type=Path, default=None, help="family folder (default: assets/demo)")
    parser.add_argument("--skill", default=None, help="skill to sweep (default: the family's first)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if args.points < 2:
        parser.error("--points must be >= 2")

    from engine.demo import load_family

    family = load_family(args.family) if args.family else load_family()
    spec = _sweep_spec(family, args.points, args.skill)
    print(
        f"swap path: {args.points}-point sweep of skill {next(iter(spec.skill_paths))} on {family.root} "
        f"({args.backend}) ...",
        flush=True,
    )
    swap = swap_path(spec, args.backend)
    points = swap["points"]
    # Every point is a real swap, ω=0 included: the engine starts on the general checkpoint, not on a merge.
    swap_median = statistics.median(p["swap_s"] for p in points)
    gen_median = statistics.median(p["generate_s"] for p in points)
    score_median = statistics.median(p["score_s"] for p in points)
    print(
        f"\n{swap['backend']}: {swap['prompts_per_point']} prompts/point ({', '.join(swap['suites'])}), "
        f"one batched call per point\n"
        f"engine start {swap['engine_start_s']:.1f}s; per point median: swap {swap_median:.3f}s, "
        f"generate {gen_median:.2f}s, score {score_median:.3f}s"
    )
    met = swap["total_s"] <= SWEEP_TARGET_S
    print(
        f"whole {args.points}-point sweep incl. engine start: {swap['total_s']:.1f}s "
        f"(target <= {SWEEP_TARGET_S:.0f}s: {'met' if met else 'NOT met'})"
    )
    if not met:
        per_prompt = gen_median / max(swap["prompts_per_point"], 1)
        budget = (SWEEP_TARGET_S - swap["engine_start_s"]) / args.points
        print(
            f"  measured {per_prompt * 1000:.2f} ms/prompt: about {int(budget / per_prompt)} prompts/point fit "
            f"the target with this engine start"
        )
    figures = {k: v for k, v in swap.items() if k not in ("prepared", "replies")}
    figures["median"] = {"swap_s": swap_median, "generate_s": gen_median, "score_s": score_median}

    if args.naive_points > 0:
        print(
            f"\nnaive path: write the merged checkpoint + start a new engine, measured on {args.naive_points} "
            "points ...",
            flush=True,
        )
        naive = naive_path(swap["prepared"], args.backend, args.naive_points)
        for row in naive:
            # Same model either way: the engine fed in place must answer like a fresh engine on the exported files.
            swapped = swap["replies"][row["label"]]
            differ = sum(a != b for a, b in zip(row.pop("replies"), swapped, strict=True))
            print(
                f"  {row['label']}: {differ} of {len(swapped)} replies differ between naive and swapped engine"
            )
            row["replies_differing"] = differ
        overhead = statistics.mean(r["write_s"] + r["start_s"] for r in naive)
        per_point = statistics.mean(r["write_s"] + r["start_s"] + r["generate_s"] for r in naive)
        ratio = overhead / swap_median if swap_median else float("inf")
        extrapolated = per_point * args.points
        print(
            f"naive per-point cost instead of a swap (write + engine start): {overhead:.1f}s vs swap "
            f"{swap_median:.3f}s -> swap is {ratio:.0f}x faster (target >= {SWAP_RATIO_TARGET:.0f}x: "
            f"{'met' if ratio >= SWAP_RATIO_TARGET else 'NOT met'})"
        )
        print(
            f"naive whole sweep, EXTRAPOLATED from {len(naive)} measured points x {args.points}: "
            f"{extrapolated:.0f}s vs {swap['total_s']:.1f}s measured with swaps "
            f"({extrapolated / swap['total_s']:.1f}x)"
        )
        figures["naive"] = {
            "measured_points": naive,
            "per_point_overhead_s": overhead,
            "per_point_s": per_point,
            "extrapolated_sweep_s": extrapolated,
            "swap_speedup": ratio,
        }
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
