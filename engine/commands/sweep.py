"""`mergescope sweep`: sweep mixture weights, evaluate every point and the reference models, store, report.

With no checkpoint flags it sweeps the embedded demo family on its own suites (and its references, e.g. the
continued-fine-tuned model), so `mergescope sweep` alone shows the whole loop.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from engine.backends import Backend, GenerationSettings, make_backend
from engine.backends.lazy import LazyBackend
from engine.commands.engine_args import add_engine_arguments, backend_options
from engine.commands.table import aligned_lines
from engine.errors import ConfigError, MergescopeError
from engine.store import ResultStore
from engine.sweep import PointResult, SweepSpec, parse_named, parse_weights, prepare_sweep, run_sweep
from evals.builtin import split_suite_refs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Sweep the mixture weight ω of θ_G + Σ ω·(θ_D − θ_pre), evaluate every point and the reference models "
        "(base, general, each skill, extras) on eval suites with one live engine (weights swapped in place), "
        "store every result in SQLite (a re-run reuses them; a killed sweep resumes) and print a table. "
        "With no --base/--general/--skill it uses the embedded demo family (its safety skill; with --grid, safety "
        "and math), its suites and its references."
    )
    group = parser.add_argument_group("checkpoints (all three, or none for the demo family)")
    group.add_argument("--base", help="base checkpoint θ_pre (folder)")
    group.add_argument("--general", help="general instruction-tuned checkpoint θ_G; the engine starts on it")
    group.add_argument(
        "--skill",
        action="append",
        default=[],
        metavar="[NAME=]PATH",
        help="skill checkpoint θ_D (repeatable)",
    )
    group.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="extra reference checkpoint evaluated as is, e.g. cft=PATH (repeatable)",
    )
    group.add_argument(
        "--no-standard-references",
        action="store_true",
        help="do not evaluate base, general and each skill as reference points",
    )
    parser.add_argument("--method", default="task_arithmetic", help="merge method (default: task_arithmetic)")
    parser.add_argument(
        "--method-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="global method parameter, e.g. density=0.5 (repeatable)",
    )
    parser.add_argument(
        "--weights", default="0:1:0.1", help="ω values: START:STOP:STEP or a comma list (default 0:1:0.1)"
    )
    parser.add_argument(
        "--grid", action="store_true", help="2-D grid over two skills (the product of --weights)"
    )
    parser.add_argument(
        "--evals",
        action="append",
        default=[],
        metavar="SUITES",
        help="built-in suite name (xstest, gsm8k, gsm8k-mini, humaneval...), suite folder, manifest, or a folder "
        "of suites; or an lm-evaluation-harness task as lm-eval:TASK "
        "(data from the datasets cache) or lm-eval:path/to/task.yaml, with optional task options after '@': "
        "lm-eval:TASK@fewshot=5,limit=50 (lm-eval's --num_fewshot and --limit; limit may be a fraction such as "
        "0.1); comma lists and repeats add up, an entry's options stay with it (default: the demo family's suites)",
    )
    parser.add_argument(
        "--composite",
        action="append",
        default=[],
        metavar="NAME=SUITE,SUITE",
        help="a composite axis: the mean of the named suites' scores (suite names, lm-eval: entries or aggregates "
        "such as general), e.g. general_avg=demo-general,lm-eval:arc_easy (repeatable)",
    )
    add_engine_arguments(parser)
    parser.add_argument("--csv", type=Path, help="also write the sweep's table as CSV")
    parser.add_argument("--json", type=Path, help="also write the sweep's full results as JSON")
    parser.add_argument(
        "--plot", type=Path, metavar="FILE.html",
        help="also write the tradeoff and safety plots as one self-contained HTML page (as the dashboard exports)",
    )  # fmt: skip
    parser.add_argument(
        "--dataset-sizes",
        default=None,
        metavar="general=N,SKILL=N",
        help="training-set sizes for the heuristic ω=|D|/|G| (default: from checkpoint/family metadata)",
    )
    parser.add_argument(
        "--no-heuristic-point", action="store_true", help="do not add the heuristic ω as a point"
    )
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        help="default max new tokens (suites may override); each reply is cut to what its prompt leaves of the "
        "model's context, and a prompt too long to leave any counts as failed (said before the sweep starts)",
    )
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="run N engines as Ray actors and spread the points over them (default 1: one engine here)",
    )
    parser.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="join this Ray cluster (e.g. ray://head:10001 or auto) instead of starting a local one",
    )


def _parse_sizes(text: str | None) -> dict[str, int]:
    if not text:
        return {}
    sizes: dict[str, int] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        try:
            if not sep:
                raise ValueError("expected NAME=N")
            sizes[name.strip()] = int(float(value))
            if sizes[name.strip()] <= 0:
                raise ValueError("sizes must be > 0")
        except ValueError as exc:
            raise ConfigError(f"--dataset-sizes {text!r}: {part!r}: {exc}") from exc
    return sizes


def _parse_params(entries: list[str]) -> dict[str, Any]:
    import yaml

    params: dict[str, Any] = {}
    for entry in entries:
        key, sep, value = entry.partition("=")
        if not sep or not key:
            raise ConfigError(f"--method-param {entry!r}: expected KEY=VALUE")
        params[key] = yaml.safe_load(value)  # numbers and booleans as such
    return params


def build_spec(args: argparse.Namespace) -> SweepSpec:
    given = {"--base": args.base, "--general": args.general, "--skill": args.skill}
    sizes = _parse_sizes(args.dataset_sizes)
    references = {}
    for entry in args.reference:
        name, path = parse_named(entry, flag="--reference")
        if name is None:
            raise ConfigError(f"--reference {entry!r}: expected NAME=PATH")
        references[name] = path
    suites = split_suite_refs(args.evals)  # built-in names, comma lists: --evals xstest,gsm8k-mini
    if not any(given.values()):
        from engine.demo import load_family

        family = load_family()
        base, general = str(family.base), str(family.general)
        # The family's first skill (safety) alone gives the paper's 1-D tradeoff; --grid sweeps the first two.
        family_skills = list(family.skills.items())[: 2 if args.grid else 1]
        skills = {name: str(path) for name, path in family_skills}
        references = {**{k: str(v) for k, v in family.references.items()}, **references}
        suites = suites or [str(p) for p in family.suites]
        sizes = {**dict(family.dataset_sizes or {}), **sizes}
    else:
        missing = [flag for flag, value in given.items() if not value]
        if missing:
            raise ConfigError(
                f"sweep: {', '.join(missing)} missing (give --base, --general and --skill, or none)"
            )
        base, general, skills = args.base, args.general, list(args.skill)
        if not suites:
            raise ConfigError(
                "sweep: no --evals given (the demo family's suites are the default only when no checkpoint "
                "flags are given; e.g. --evals assets/demo/evals)"
            )
    settings = GenerationSettings(seed=args.seed)
    if args.max_tokens is not None:
        settings = GenerationSettings(max_tokens=args.max_tokens, seed=args.seed)
    return SweepSpec(
        base=base,
        general=general,
        skills=skills,
        method=args.method,
        method_params=_parse_params(args.method_param),
        weights=parse_weights(args.weights),
        grid=args.grid,
        suites=suites,
        references=references,
        settings=settings,
        standard_references=not args.no_standard_references,
        dataset_sizes=sizes,
        heuristic_point=not args.no_heuristic_point,
        composites=_parse_composites(args.composite),
    )


def _parse_composites(entries: list[str]) -> dict[str, list[str]]:
    from evals.composite import parse_composite

    composites: dict[str, list[str]] = {}
    for entry in entries:
        name, members = parse_composite(entry)
        if name in composites:
            raise ConfigError(f"--composite {entry!r}: composite {name!r} given twice")
        composites[name] = members
    return composites


def _fmt_score(score: dict[str, float] | None) -> str:
    return "-" if score is None else f"{100 * score['value']:.1f}"


def progress_line(index: int, total: int, result: PointResult) -> str:
    t = result.timings
    scores = "  ".join(f"{name} {_fmt_score(s)}" for name, s in result.aggregates().items())
    how = (
        "stored"
        if result.cached
        else f"swap {t['swap_s']:.2f}s gen {t['generate_s']:.2f}s score {t['score_s']:.2f}s"
    )
    mark = " *heuristic" if result.heuristic else ""
    counter = f"[{index + 1}/{total}]"
    return f"{counter:<8} {result.label:<14} {how:<40} {scores}{mark}"


def format_table(results: list[PointResult], heuristic: dict[str, float]) -> str:
    """Final table: one row per point; scores in % with their Wilson 95% interval."""
    names: list[str] = []
    for r in results:
        names += [n for n in r.aggregates() if n not in names]
    header = ["point", "kind", *names]
    rows = [header]
    for r in results:
        cells = [r.label + (" *" if r.heuristic else ""), r.kind]
        for name in names:
            s = r.aggregates().get(name)
            cells.append(
                "-" if s is None else f"{100 * s['value']:.1f} [{100 * s['lo']:.0f}-{100 * s['hi']:.0f}]"
            )
        rows.append(cells)
    lines = aligned_lines(rows)
    if heuristic:
        marked = any(r.heuristic for r in results)
        lines.append(
            "heuristic ω = |D|/|G|: "
            + ", ".join(f"{k} {v:.3f}" for k, v in heuristic.items())
            + ("  (* = that point)" if marked else "  (a swept point only for a single --skill)")
        )
    lines.append("scores in %, [Wilson 95% interval]; n items per score in the CSV/JSON export")
    return "\n".join(lines)


def _start_engines(general: str, options: dict[str, Any], args: argparse.Namespace, err: TextIO) -> Any:
    """The sweep's engine: one backend here, or a pool of Ray actors (`--workers`, `--ray-address`)."""
    if args.workers > 1 or args.ray_address:
        from engine.pool import EnginePool

        print(f"starting {args.workers} {options['kind']} engine(s) as Ray actors ...", file=err, flush=True)
        return EnginePool(general, args.workers, options, address=args.ray_address)
    print(f"starting the {options['kind']} backend on {general} ...", file=err, flush=True)
    return make_backend(general, **options)


def _planned_dtype(general: str, options: dict[str, Any], args: argparse.Namespace) -> str | None:
    """The serving dtype, known before any engine starts (results are looked up by it). For a Ray cluster the
    engines' machines decide (None here: the pool reports it once started)."""
    from engine.backends.machine import serving_dtype

    if args.ray_address:
        return None if options["dtype"] in (None, "auto") else options["dtype"]
    return serving_dtype(options["dtype"], general, device=options["device"])


def _describe(backend: Any, seconds: float) -> str:
    """The ready line: which backend, how fast it started, the serving dtype (part of every result's key)."""
    info = backend.describe()
    return f"{info['backend']} backend ready in {seconds:.1f}s (serving dtype {info['dtype']})"


def run(args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    # vLLM's INFO lines (hundreds per engine start) would bury the per-point progress lines; the user's own
    # VLLM_LOGGING_LEVEL wins. Set before the backend module imports vllm.
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    spec = build_spec(args)
    prepared = prepare_sweep(spec)  # every input error surfaces here, before an engine starts
    n_prompts = sum(len(s.items) for s in prepared.suites)
    print(
        f"sweep: {len(prepared.points)} points x {len(prepared.suites)} suites ({n_prompts} prompts/point), "
        f"store {args.store}",
        file=err,
    )
    fit_notes = prepared.fit_warnings()
    for line in fit_notes:  # before any engine work, so a user can stop and pick other suites
        print(f"warning: context: {line}", file=err, flush=True)
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    options = backend_options(args)
    with ResultStore(args.store) as store:
        start = time.perf_counter()

        def start_engine() -> Backend:
            # Only when a point needs generation: a sweep whose results are all stored starts no engine.
            return _start_engines(spec.general, options, args, err)

        backend = LazyBackend(
            spec.general,
            start_engine,
            kind=args.backend,
            dtype=_planned_dtype(spec.general, options, args),
            on_start=lambda b, s: print(_describe(b, s), file=err, flush=True),
        )
        results: list[PointResult] = []
        try:
            for result in run_sweep(
                prepared,
                backend,
                store,
                on_progress=lambda i, n, r: print(progress_line(i, n, r), file=err, flush=True),
            ):
                results.append(result)
        except KeyboardInterrupt:
            print(
                f"interrupted after {len(results)} of {len(prepared.points)} points; their results are in "
                f"{args.store}; run the same command again to resume",
                file=err,
            )
            raise
        except MergescopeError as exc:
            # Same error class, with where the sweep stopped and how to resume.
            raise type(exc)(
                f"{exc}\nthe sweep stopped after {len(results)} of {len(prepared.points)} points; their results "
                f"are in {args.store}; run the same command again to resume"
            ) from exc
        finally:
            backend.close()
        how = (
            "engine start included" if backend.started else "every result was in the store; no engine started"
        )
        print(f"sweep done in {time.perf_counter() - start:.1f}s ({how})", file=err)
        if backend.swap_path is not None:
            print(f"weight swaps: {backend.swap_path} path ({backend.swap_reason})", file=err)
        print(format_table(results, prepared.heuristic), file=out)
        for line in fit_notes:  # again under the table: the scores above include these failures
            print(f"warning: context: {line}", file=err)
        sweep_id = store.begin_sweep(prepared.store_spec())
        if args.csv:
            print(f"wrote {store.export_csv(sweep_id, args.csv)}", file=err)
        if args.json:
            print(f"wrote {store.export_json(sweep_id, args.json)}", file=err)
        if args.plot:
            from engine.store import atomic_write_text
            from ui.figures import plot_html  # plotly only: the figures the dashboard draws

            print(f"wrote {atomic_write_text(args.plot, plot_html(store.sweep_points(sweep_id)))}", file=err)
    return 0
