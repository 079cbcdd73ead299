"""Sweep benchmark on the demo family: in-place weight swaps vs the naive path, measured in the same run.

    VLLM_CPU_KVCACHE_SPACE=1 .venv/bin/python bench/sweep_bench.py [--points 11] [--naive-points 2]
        [--backend vllm|transformers|auto] [--family DIR] [--skill NAME] [--json FIGURES.json]
    VLLM_CPU_KVCACHE_SPACE=1 .venv/bin/python bench/sweep_bench.py --sizes 100M,800M,1.6G [--prompts 40]
        [--points 4] [--backend vllm] [--dtype auto] [--json FIGURES.json]

--sizes: for each size, a synthetic Llama family (base, general, skill; float32) of about that checkpoint size is
written to a temporary folder and swept with `--prompts` prompts of the demo general suite per point; one table
row per size: engine start, swap (first: reads the resident inputs; then the median), the bandwidth bound (writing
the served weights once, measured in the engine's worker in the same run), the restart a sweep without swaps pays
per point (write the merged checkpoint + start an engine on it), generate and score per point, peak RSS, and how
many replies differ between the swapped engine and the fresh one (must be 0). The synthetic shape scales with the
size (`engine.synthetic.config_for_size`: vocab 1024..32000, hidden 64..4096, the MLP width fitted), so a row's
checkpoint is within a few percent of the size asked for; the table shows both.

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


def swap_path(spec, backend_kind: str, options: dict | None = None) -> dict:
    from engine.backends import make_backend
    from engine.store import ResultStore
    from engine.sweep import prepare_sweep, run_sweep

    begin = time.perf_counter()
    prepared = prepare_sweep(spec)
    prepare_s = time.perf_counter() - begin
    with tempfile.TemporaryDirectory() as tmp, ResultStore(Path(tmp) / "bench.db") as store:
        start = time.perf_counter()
        backend = make_backend(spec.general, kind=backend_kind, **(options or {}))
        engine_start = time.perf_counter() - start
        try:
            bound = backend.write_bound_s() if hasattr(backend, "write_bound_s") else None
            results = []
            details = []
            for r in run_sweep(prepared, backend, store):
                t = r.timings
                detail = dict(getattr(backend, "swap_detail", {}) or {})
                split = (
                    f" (write {detail['write_s']:.3f}s + re-pack {detail['pack_s']:.3f}s of thread time on "
                    f"{detail.get('workers', 1):.0f})"
                    if "pack_s" in detail
                    else ""
                )
                print(
                    f"  {r.label:<8} swap {t['swap_s']:.3f}s{split}  generate {t['generate_s']:.2f}s  "
                    f"score {t['score_s']:.3f}s",
                    flush=True,
                )
                results.append(r)
                details.append(detail)
            total = time.perf_counter() - begin
            info = backend.describe()
        finally:
            backend.close()
    return {
        "backend": backend.kind,
        "dtype": info["dtype"],
        "swap_path": info["swap_path"],
        "swap_reason": info["swap_reason"],
        "bound_s": bound,
        "prepare_s": prepare_s,
        "engine_start_s": engine_start,
        "total_s": total,
        "prompts_per_point": sum(len(s.items) for s in prepared.suites),
        "suites": [s.name for s in prepared.suites],
        "points": [
            {"label": r.label, **r.timings, **{f"swap_{k}": v for k, v in d.items()}}
            for r, d in zip(results, details, strict=True)
        ],
        "prepared": prepared,
        "replies": {r.label: [x for sr in r.suite_results for x in sr.replies] for r in results},
    }


def naive_path(prepared, backend_kind: str, count: int, options: dict | None = None) -> list[dict]:
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
            backend = make_backend(out, kind=backend_kind, **(options or {}))
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


BOUND_RATIO_TARGET = 3.0


def parse_size(text: str) -> int:
    """`100M`, `800MB`, `1.6G`, `4000000` -> bytes."""
    text = text.strip().upper().removesuffix("B")
    scale = {"K": 1e3, "M": 1e6, "G": 1e9}.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in "KMG" else text
    try:
        return int(float(number) * scale)
    except ValueError:
        raise SystemExit(f"--sizes: cannot read size {text!r} (e.g. 100M, 1.6G)") from None


def _small_suite(root: Path, prompts: int) -> str:
    """The demo general suite cut to its first `prompts` items (same scorer and generation settings)."""
    from engine.demo import load_family

    source = next(Path(p) for p in load_family().suites if Path(p).name == "demo-general")
    target = root / f"demo-general-{prompts}"
    target.mkdir(parents=True, exist_ok=True)
    (target / "suite.yaml").write_text((source / "suite.yaml").read_text())
    lines = (source / "items.jsonl").read_text().splitlines()
    (target / "items.jsonl").write_text("\n".join((lines * (prompts // len(lines) + 1))[:prompts]) + "\n")
    return str(target)


def one_size(size: int, args: argparse.Namespace) -> dict:
    """Build a family of about `size` bytes per checkpoint, sweep it with swaps, pay one naive restart."""
    import resource

    from engine.sweep import SweepSpec
    from engine.synthetic import config_for_size, write_family

    options = {"dtype": args.dtype}
    with tempfile.TemporaryDirectory(prefix="sweep-bench-") as tmp:
        t0 = time.perf_counter()
        config = config_for_size(size)
        shape = (
            f"h{config['hidden_size']} x{config['num_hidden_layers']} v{config['vocab_size']} "
            f"i{config['intermediate_size']}"
        )
        paths = write_family(Path(tmp), config, names=("base", "general", "skill"))
        build_s = time.perf_counter() - t0
        nbytes = sum(f.stat().st_size for f in paths["general"].glob("*.safetensors"))
        spec = SweepSpec(
            base=str(paths["base"]),
            general=str(paths["general"]),
            skills={"skill": str(paths["skill"])},
            weights=[round(i / (args.points - 1), 6) for i in range(args.points)],
            suites=[_small_suite(Path(tmp), args.prompts)],
            standard_references=False,
            heuristic_point=False,
        )
        print(
            f"size {nbytes / 1e6:.0f} MB (asked {size / 1e6:.0f} MB; {shape}): family written in {build_s:.1f}s; "
            "swap path ...",
            flush=True,
        )
        swap = swap_path(spec, args.backend, options)
        naive = naive_path(swap["prepared"], args.backend, 1, options)
        differ = sum(
            sum(a != b for a, b in zip(row["replies"], swap["replies"][row["label"]], strict=True)) for row in naive
        )
        replies = sum(len(row["replies"]) for row in naive)
    swaps = [p["swap_s"] for p in swap["points"]]
    usage_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    usage_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "requested_bytes": size,
        "size_bytes": nbytes,
        "shape": shape,
        "backend": swap["backend"],
        "dtype": swap["dtype"],
        "swap_path": swap["swap_path"],
        "swap_reason": swap["swap_reason"],
        "engine_start_s": swap["engine_start_s"],
        "first_swap_s": swaps[0],
        "swap_s": statistics.median(swaps[1:] or swaps),
        # The direct path's split of a swap (medians over the same points): the fused write, the CPU re-pack.
        **{
            key: statistics.median(p[f"swap_{key}"] for p in (swap["points"][1:] or swap["points"]))
            for key in ("write_s", "pack_s", "workers")
            if all(f"swap_{key}" in p for p in swap["points"])
        },
        "bound_s": swap["bound_s"],
        "restart_s": statistics.mean(r["write_s"] + r["start_s"] for r in naive),
        "generate_s": statistics.median(p["generate_s"] for p in swap["points"]),
        "score_s": statistics.median(p["score_s"] for p in swap["points"]),
        "prompts": swap["prompts_per_point"],
        "peak_rss_driver_mb": usage_self / 1024,
        "peak_rss_engine_mb": usage_children / 1024,
        "replies_differing": differ,
        "replies_compared": replies,
    }


def write_ratio(row: dict) -> float:
    """The fused write alone (wall time: thread time over the workers) against the bound: the part of a swap that
    is ours; the rest is vLLM's own re-pack of each layer (CPU only)."""
    return row["write_s"] / row.get("workers", 1) / row["bound_s"]


def sizes_table(rows: list[dict]) -> str:
    header = (
        "size (asked)", "shape", "path", "engine start", "swap (1st)", "swap", "write + re-pack (threads)",
        "bound", "swap/bound", "write/bound", "restart", "restart/swap",
        "generate", "score", "peak RSS drv/eng", "replies differ",
    )  # fmt: skip
    lines = [header]
    for r in rows:
        ratio = r["swap_s"] / r["bound_s"] if r["bound_s"] else float("nan")
        lines.append(
            (
                f"{r['size_bytes'] / 1e6:.0f} MB ({r['requested_bytes'] / 1e6:.0f} MB)",
                r["shape"],
                f"{r['swap_path']} ({r['dtype']})",
                f"{r['engine_start_s']:.1f} s",
                f"{r['first_swap_s']:.2f} s",
                f"{r['swap_s']:.3f} s",
                f"{r['write_s']:.3f} + {r['pack_s']:.3f} s ({r.get('workers', 1):.0f})" if "pack_s" in r else "-",
                f"{r['bound_s']:.3f} s" if r["bound_s"] else "-",
                f"{ratio:.1f}x",
                f"{write_ratio(r):.1f}x" if "write_s" in r and r["bound_s"] else "-",
                f"{r['restart_s']:.1f} s",
                f"{r['restart_s'] / r['swap_s']:.0f}x",
                f"{r['generate_s']:.2f} s ({r['prompts']})",
                f"{r['score_s']:.3f} s",
                f"{r['peak_rss_driver_mb']:.0f}/{r['peak_rss_engine_mb']:.0f} MB",
                f"{r['replies_differing']} of {r['replies_compared']}",
            )
        )
    from engine.commands.table import aligned_lines

    return "\n".join(aligned_lines(lines))


def run_sizes(args: argparse.Namespace) -> int:
    """Each size in its own process (a clean peak RSS per size, memory returned between sizes)."""
    import subprocess

    rows = []
    for text in args.sizes.split(","):
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            command = [
                sys.executable, __file__, "--one-size", text, "--json", out.name, "--points", str(args.points),
                "--prompts", str(args.prompts), "--backend", args.backend, "--dtype", args.dtype,
            ]  # fmt: skip
            subprocess.run(command, check=True)
            rows.append(json.loads(Path(out.name).read_text()))
        print(sizes_table(rows), flush=True)
    print("\n" + sizes_table(rows))
    for r in rows:
        ratio = r["restart_s"] / r["swap_s"]
        bound = r["swap_s"] / r["bound_s"] if r["bound_s"] else float("inf")
        print(
            f"{r['size_bytes'] / 1e6:.0f} MB: swap {ratio:.0f}x cheaper than a restart (target >= "
            f"{SWAP_RATIO_TARGET:.0f}x: {'met' if ratio >= SWAP_RATIO_TARGET else 'NOT met'}); swap {bound:.1f}x the "
            f"bandwidth bound (target <= {BOUND_RATIO_TARGET:.0f}x where resident: "
            f"{'met' if bound <= BOUND_RATIO_TARGET else 'NOT met'}"
            + (f"; the fused write alone {write_ratio(r):.1f}x" if "write_s" in r and r["bound_s"] else "")
            + f"); {r['swap_path']} path: {r['swap_reason']}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


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
    parser.add_argument("--sizes", default=None, help="comma list of checkpoint sizes, e.g. 100M,800M,1.6G")
    parser.add_argument("--prompts", type=int, default=40, help="prompts per point with --sizes (default 40)")
    parser.add_argument("--dtype", default="auto", help="serving dtype (default auto: by machine)")
    parser.add_argument("--one-size", default=None, help=argparse.SUPPRESS)  # one --sizes row, in a subprocess
    args = parser.parse_args(argv)
    if args.points < 2:
        parser.error("--points must be >= 2")
    if args.one_size:
        row = one_size(parse_size(args.one_size), args)
        args.json.write_text(json.dumps(row) + "\n")
        return 0
    if args.sizes:
        return run_sizes(args)

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
