"""Sweep benchmark on the demo family: in-place weight swaps vs the naive path, measured in the same run.

    .venv/bin/python bench/sweep_bench.py [--points 11] [--naive-points 2] [--backend vllm]

Swap path: one engine started on the general model; an 11-point ω sweep (0:1:0.1) over all demo suites, each
point swapped in place; time per point split into swap / generate / score, total including the engine start.
Naive path: for a few of the same points, write the merged checkpoint to disk and start a new engine on it, then
generate the same prompts; its per-point cost is extrapolated to the whole sweep (said so in the output).
Targets (2-core CPU): whole sweep <= 120 s including engine start; swap >= 20x faster than the naive per-point
cost (write + engine start).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _sweep_spec(family, points: int):
    from engine.sweep import SweepSpec

    step = 1.0 / (points - 1)
    weights = [round(i * step, 6) for i in range(points)]
    skill_name, skill_path = next(iter(family.skills.items()))
    return SweepSpec(
        base=str(family.base),
        general=str(family.general),
        skills={skill_name: str(skill_path)},
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
    with tempfile.TemporaryDirectory() as tmp, ResultStore(Path(tmp) / "bench.db") as store:
        start = time.perf_counter()
        backend = make_backend(spec.general, kind=backend_kind)
        engine_start = time.perf_counter() - start
        try:
            results = list(run_sweep(prepared, backend, store))
            total = time.perf_counter() - begin
        finally:
            backend.close()
    prompts = sum(len(s.items) for s in prepared.suites)
    return {
        "kind": backend.kind,
        "engine_start_s": engine_start,
        "total_s": total,
        "prompts_per_point": prompts,
        "points": [(r.label, r.timings) for r in results],
        "prepared": prepared,
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
                backend.generate(None, prompts, settings)
                t3 = time.perf_counter()
            finally:
                backend.close()  # not timed: the swap path's close is not timed either
        rows.append({"label": point.label, "write_s": t1 - t0, "start_s": t2 - t1, "generate_s": t3 - t2})
        print(
            f"  naive {point.label}: write {t1 - t0:.2f}s start {t2 - t1:.1f}s generate {t3 - t2:.2f}s",
            flush=True,
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--points", type=int, default=11)
    parser.add_argument("--naive-points", type=int, default=2, help="naive points to measure (0: skip)")
    parser.add_argument("--backend", default="vllm", choices=["auto", "vllm", "transformers"])
    args = parser.parse_args(argv)

    from engine.demo import load_family

    family = load_family()
    spec = _sweep_spec(family, args.points)
    print(f"swap path: {args.points}-point sweep on the demo family ({args.backend}) ...", flush=True)
    swap = swap_path(spec, args.backend)
    swaps = [t["swap_s"] for _, t in swap["points"]]
    gens = [t["generate_s"] for _, t in swap["points"]]
    scores = [t["score_s"] for _, t in swap["points"]]
    print(f"\n{'point':<10} {'swap s':>8} {'generate s':>11} {'score s':>8}")
    for label, t in swap["points"]:
        print(f"{label:<10} {t['swap_s']:>8.3f} {t['generate_s']:>11.2f} {t['score_s']:>8.3f}")
    # The first point (ω=0) is a real swap too: the engine starts on the general checkpoint, not on a merge.
    real_swaps = [s for s in swaps if s > 0]
    swap_median = statistics.median(real_swaps) if real_swaps else 0.0
    print(
        f"\n{swap['kind']}: {swap['prompts_per_point']} prompts/point; engine start {swap['engine_start_s']:.1f}s; "
        f"median swap {swap_median:.3f}s, generate {statistics.median(gens):.2f}s, score {statistics.median(scores):.3f}s"
    )
    print(
        f"whole sweep incl. engine start: {swap['total_s']:.1f}s (target <= 120s: "
        f"{'met' if swap['total_s'] <= 120 else 'NOT met'})"
    )

    if args.naive_points <= 0:
        return 0
    print(
        f"\nnaive path: write merged checkpoint + new engine, measured on {args.naive_points} points ...",
        flush=True,
    )
    naive = naive_path(swap["prepared"], args.backend, args.naive_points)
    overhead = statistics.mean(r["write_s"] + r["start_s"] for r in naive)
    per_point = statistics.mean(r["write_s"] + r["start_s"] + r["generate_s"] for r in naive)
    naive_total = per_point * args.points
    ratio = overhead / swap_median if swap_median else float("inf")
    print(
        f"naive per-point overhead (write + engine start): {overhead:.1f}s vs swap {swap_median:.3f}s "
        f"-> swap is {ratio:.0f}x faster (target >= 20x: {'met' if ratio >= 20 else 'NOT met'})"
    )
    print(
        f"naive whole sweep, extrapolated from {len(naive)} measured points x {args.points}: {naive_total:.0f}s "
        f"vs {swap['total_s']:.1f}s measured with swaps ({naive_total / swap['total_s']:.1f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
