"""The sweep runner: for every mixture weight (and every reference checkpoint), swap the variant into the running
backend, answer all prompts of all suites in one batched call, score, store, and yield the point.

Points: a 1-D list of ω (the same ω for every skill), or with `grid=True` the 2-D product over two skills. Each
variant is the PTM config θ_G + Σ ω_k (θ_Dk − θ_pre) (`engine.config.ptm_config`), or another method's config
with the same models. Reference checkpoints (base, general, each skill, extras such as a continued-fine-tuned
model) are evaluated as configs that just load that checkpoint. Results are keyed in the store by content, so a
re-run reuses them and a killed sweep resumes where it stopped.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from engine.backends.base import Backend, GenerationSettings
from engine.errors import CheckpointError, ConfigError
from engine.store import ResultStore, result_key, stable_hash

if TYPE_CHECKING:
    from engine.checkpoint import Checkpoint
    from engine.config import MergeConfig
    from engine.prompt_fit import SuiteFit
    from evals import Score, Scores, Suite, SuiteResult

# Aggregate-name conventions shared with evals (kept as literals so this module imports no lm-eval).
LM_EVAL_AGGREGATE = "lm-eval"
COMPOSITE_PREFIX = "composite:"

# The most variant points one sweep may have (a list, a range or a 2-D grid): more is a typo (0:1:0.0001) or a
# runaway request, and would queue hours of engine work.
MAX_POINTS = 1000

# How many decimals a weight keeps: 0:1:0.1 must give 0.3, not 0.30000000000000004, or the store key drifts.
WEIGHT_DECIMALS = 6


# --- weights ---------------------------------------------------------------------------------------------------
def parse_weights(text: str) -> list[float]:
    """`START:STOP:STEP` (inclusive of STOP when it falls on the grid) or a comma list, e.g. `0:1:0.1`,
    `0,0.2,0.5`. Raises ConfigError naming the text."""
    text = text.strip()
    try:
        if ":" in text:
            parts = [float(p) for p in text.split(":")]
            if len(parts) != 3:
                raise ValueError("expected START:STOP:STEP")
            start, stop, step = parts
            if step <= 0:
                raise ValueError("STEP must be > 0")
            if stop < start:
                raise ValueError("STOP must be >= START")
            count = int((stop - start) / step + 1e-9) + 1
            if count > MAX_POINTS:
                raise ValueError(f"{count} points is too many (at most {MAX_POINTS})")
            weights = [round(start + i * step, WEIGHT_DECIMALS) for i in range(count)]
        else:
            parts = [p for p in text.split(",") if p.strip()]
            if len(parts) > MAX_POINTS:
                raise ValueError(f"{len(parts)} points is too many (at most {MAX_POINTS})")
            weights = [round(float(p), WEIGHT_DECIMALS) for p in parts]
        if any(w != w or w in (float("inf"), float("-inf")) for w in weights):
            raise ValueError("weights must be finite numbers")
    except (ValueError, OverflowError) as exc:
        raise ConfigError(f"--weights {text!r}: {exc}") from exc
    if not weights:
        raise ConfigError(f"--weights {text!r}: no weights")
    return list(dict.fromkeys(weights))  # drop duplicates, keep order


def format_weights(weights: Sequence[float]) -> str:
    if not weights:
        return ""
    inner = ",".join(f"{w:g}" for w in weights)
    return f"ω={inner}" if len(weights) == 1 else f"ω=({inner})"


# --- the spec --------------------------------------------------------------------------------------------------
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def parse_named(entry: str, *, flag: str) -> tuple[str | None, str]:
    """`NAME=PATH` or just `PATH`; returns (name or None, path)."""
    name, sep, path = entry.partition("=")
    if not sep:
        return None, entry
    if not _NAME_RE.match(name):
        raise ConfigError(f"{flag} {entry!r}: name {name!r} must be letters, digits, '_', '.', '-'")
    if not path:
        raise ConfigError(f"{flag} {entry!r}: missing PATH after '='")
    return name, path


@dataclass
class SweepSpec:
    """What to sweep. `skills` maps skill name -> checkpoint (a list of `NAME=PATH` or `PATH` strings works
    too: the name is then the folder name). `settings` are the defaults each suite's `generation:` block
    overrides key by key. `dataset_sizes` ({"general": N, <skill>: N}) gives the heuristic ω = |D|/|G| where
    the checkpoints' metadata does not."""

    base: str
    general: str
    skills: Mapping[str, str] | Sequence[str]
    method: str = "task_arithmetic"
    method_params: dict[str, Any] = field(default_factory=dict)
    weights: list[float] = field(default_factory=lambda: parse_weights("0:1:0.1"))
    grid: bool = False
    suites: list[str] = field(default_factory=list)
    references: dict[str, str] = field(default_factory=dict)
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    standard_references: bool = True  # evaluate base, general and each skill as references too
    dataset_sizes: dict[str, int] = field(default_factory=dict)
    heuristic_point: bool = True  # add the heuristic ω as a point of a 1-D sweep when it is known
    # Composite axes: name -> the suites (or aggregates) whose scores it averages, e.g. the paper's general average.
    composites: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.skill_paths: dict[str, str] = _skill_map(self.skills)
        if not self.skill_paths:
            raise ConfigError("sweep: at least one skill checkpoint is required")
        if not self.weights:
            raise ConfigError("sweep: no weights to sweep")
        if self.grid and len(self.skill_paths) != 2:
            raise ConfigError(f"sweep: --grid needs exactly two skills, got {len(self.skill_paths)}")
        if self.grid and len(self.weights) ** 2 > MAX_POINTS:
            raise ConfigError(
                f"sweep: --weights: a {len(self.weights)}x{len(self.weights)} grid is {len(self.weights) ** 2} "
                f"points, more than {MAX_POINTS}"
            )
        if not self.suites:
            raise ConfigError("sweep: no eval suites given")
        self.composites = {str(k): [str(m) for m in v] for k, v in (self.composites or {}).items()}
        for name in self.references:
            if not _NAME_RE.match(name):
                raise ConfigError(f"sweep: reference name {name!r} must be letters, digits, '_', '.', '-'")

    def points(self) -> list[Point]:
        """Variant points then reference points, in evaluation order (the general model first: it is already
        loaded when the backend was started on it)."""
        return self._reference_points() + self._variant_points(heuristic=None)

    def _variant_points(self, heuristic: float | None) -> list[Point]:
        from engine.config import ptm_config

        names = list(self.skill_paths)
        if self.grid:
            combos = [(a, b) for a in self.weights for b in self.weights]
        else:
            combos = [tuple(w for _ in names) for w in self.weights]
            if heuristic is not None and self.heuristic_point and len(names) == 1:
                h = round(heuristic, 3)
                if all(abs(c[0] - h) > 1e-9 for c in combos):
                    combos = sorted([*combos, (h,)])
        points = []
        for combo in combos:
            skills = {self.skill_paths[n]: w for n, w in zip(names, combo, strict=True)}
            config = ptm_config(
                self.base, self.general, skills, method=self.method, parameters=self.method_params or None
            )
            is_h = heuristic is not None and len(combo) == 1 and abs(combo[0] - round(heuristic, 3)) < 1e-9
            points.append(Point(format_weights(combo), "variant", tuple(combo), config, heuristic=is_h))
        return points

    def _reference_points(self) -> list[Point]:
        refs: dict[str, str] = {}
        if self.standard_references:
            refs["general"] = self.general
            refs["base"] = self.base
            for name, path in self.skill_paths.items():
                refs[f"skill:{name}"] = path
        refs.update(self.references)
        return [Point(label, "reference", (), checkpoint_config(path)) for label, path in refs.items()]

    def checkpoint_refs(self) -> dict[str, str]:
        """Every checkpoint the sweep touches, by role."""
        refs = {"base": self.base, "general": self.general}
        refs.update({f"skill:{n}": p for n, p in self.skill_paths.items()})
        refs.update({f"reference:{n}": p for n, p in self.references.items()})
        return refs

    def to_dict(self) -> dict[str, Any]:
        return {
            "base": str(self.base),
            "general": str(self.general),
            "skills": {k: str(v) for k, v in self.skill_paths.items()},
            "method": self.method,
            "method_params": self.method_params,
            "weights": list(self.weights),
            "grid": self.grid,
            "suites": [str(s) for s in self.suites],
            "references": {k: str(v) for k, v in self.references.items()},
            "settings": self.settings.to_dict(),
            "standard_references": self.standard_references,
            # Only when given, so sweeps without composites keep their ids.
            **({"composites": {k: list(v) for k, v in self.composites.items()}} if self.composites else {}),
        }


def _skill_map(skills: Mapping[str, str] | Sequence[str]) -> dict[str, str]:
    if isinstance(skills, Mapping):
        return {str(k): str(v) for k, v in skills.items()}
    out: dict[str, str] = {}
    for entry in skills:
        name, path = parse_named(str(entry), flag="--skill")
        name = name or Path(path).name
        if name in out:
            raise ConfigError(f"--skill {entry!r}: skill name {name!r} given twice; use NAME=PATH")
        out[name] = path
    return out


@dataclass
class Point:
    label: str
    kind: str  # "variant" | "reference"
    weights: tuple[float, ...]
    config: MergeConfig
    heuristic: bool = False


def checkpoint_config(path: str | Path) -> MergeConfig:
    """A config that merely loads one checkpoint (a reference model): mergekit's `linear` over that one model at
    weight 1 (Σ w·θ / Σ w = θ exactly), which mergekit itself reproduces. Backends recognise it
    (`single_checkpoint`) and load the checkpoint as is, without merge arithmetic."""
    from engine.config import load_config

    text = yaml.safe_dump(
        {"merge_method": "linear", "models": [{"model": str(path), "parameters": {"weight": 1.0}}]}
    )
    return load_config(text)


# --- heuristic ω -----------------------------------------------------------------------------------------------
_SIZE_KEYS = ("dataset_size", "num_examples", "train_examples")


def _size_from_metadata(ckpt: Checkpoint) -> int | None:
    meta = ckpt.metadata or {}
    for key in _SIZE_KEYS:
        value = meta.get(key)
        if isinstance(value, int | float) and value > 0:
            return int(value)
    return None


def heuristic_weight(
    general_ckpt: Checkpoint, skill_ckpt: Checkpoint, sizes: Mapping[str, int] | None = None, skill: str = ""
) -> float | None:
    """|D|/|G| (Morrison et al. 2024): the skill's training-set size over the general model's. Sizes come from
    `sizes` ({"general": N, <skill>: N}) first, else each checkpoint's `mergescope.json` (`dataset_size`)."""
    sizes = sizes or {}
    g = sizes.get("general") or _size_from_metadata(general_ckpt)
    d = sizes.get(skill) or _size_from_metadata(skill_ckpt)
    if not g or not d:
        return None
    return d / g


# --- results ---------------------------------------------------------------------------------------------------
@dataclass
class PointResult:
    label: str
    kind: str
    weights: tuple[float, ...]
    scores: Scores
    suite_results: list[SuiteResult]
    timings: dict[str, float]  # swap_s, generate_s, score_s (zeros when every result came from the store)
    key: str  # the variant's identity hash
    cached: bool  # True when every suite result came from the store
    heuristic: bool = False
    config: MergeConfig | None = None
    composites: dict[str, Score] = field(default_factory=dict)  # the sweep's composite axes, by name

    def aggregates(self) -> dict[str, dict[str, float]]:
        """Flat name -> Score dict for tables and CSV: general, skill:<name>, harmful_refusal, benign_compliance."""
        out: dict[str, dict[str, float]] = {}
        if self.scores.general is not None:
            out["general"] = self.scores.general.to_dict()
        for name, score in self.scores.skills.items():
            if name == "safety" and self.scores.harmful_refusal is not None:
                continue  # the same numbers appear as harmful_refusal
            out[f"skill:{name}"] = score.to_dict()
        if self.scores.harmful_refusal is not None:
            out["harmful_refusal"] = self.scores.harmful_refusal.to_dict()
        if self.scores.benign_compliance is not None:
            out["benign_compliance"] = self.scores.benign_compliance.to_dict()
        for r in self.suite_results:
            if r.aggregate == LM_EVAL_AGGREGATE:  # lm-eval suites keep their own score (not pooled)
                out[r.suite] = r.score.to_dict()
        for name, score in self.composites.items():
            out[f"{COMPOSITE_PREFIX}{name}"] = score.to_dict()
        return out


Progress = Callable[[int, int, PointResult], None]


@dataclass
class PreparedSweep:
    """The validated inputs of a sweep: suites loaded, checkpoints opened and found compatible, heuristic known."""

    spec: SweepSpec
    suites: list[Suite]
    checkpoints: dict[str, Checkpoint]  # by path string
    identities: dict[str, str]  # path string -> content identity
    heuristic: dict[str, float]  # skill name -> |D|/|G|
    points: list[Point]
    # How each chat suite's prompts fit the served model's context (engine.prompt_fit), by suite name.
    fits: dict[str, SuiteFit] = field(default_factory=dict)

    def fit_warnings(self) -> list[str]:
        """One line per suite whose prompts do not all fit the model's context as asked (empty: all fit)."""
        return [fit.summary() for fit in self.fits.values() if fit.affected]

    def store_spec(self) -> dict[str, Any]:
        """What the store records for this sweep (its id is a hash of it): the spec plus checkpoint identities."""
        return {**self.spec.to_dict(), "identities": self.identities}


def prepare_sweep(spec: SweepSpec) -> PreparedSweep:
    """Everything that can fail before the engine does any work: suites, checkpoints, compatibility."""
    from engine.checkpoint import open_checkpoint
    from engine.compat import compatibility_report
    from evals import load_suites
    from evals.lm_eval_suite import is_lm_eval_ref, load_lm_eval_suite

    plain = [s for s in spec.suites if not is_lm_eval_ref(s)]
    suites: list[Any] = load_suites(plain) if plain else []
    suites += [load_lm_eval_suite(ref) for ref in spec.suites if is_lm_eval_ref(ref)]
    if not suites:
        raise ConfigError(f"sweep: no suites found in {', '.join(map(str, spec.suites))}")
    names = [s.name for s in suites]
    if len(set(names)) != len(names):
        raise ConfigError(f"sweep: a suite name is given twice: {', '.join(names)}")
    check_composites(spec.composites, suites)
    checkpoints: dict[str, Checkpoint] = {}
    for path in dict.fromkeys(spec.checkpoint_refs().values()):
        checkpoints[path] = open_checkpoint(path)
    report = compatibility_report(list(checkpoints.values()))
    if not report.ok:
        raise CheckpointError(f"sweep: the checkpoints are not compatible:\n{report.format()}")
    identities = {path: ckpt.identity() for path, ckpt in checkpoints.items()}
    heuristic: dict[str, float] = {}
    for name, path in spec.skill_paths.items():
        h = heuristic_weight(checkpoints[spec.general], checkpoints[path], spec.dataset_sizes, skill=name)
        if h is not None:
            heuristic[name] = h
    only_h = next(iter(heuristic.values())) if len(spec.skill_paths) == 1 and heuristic else None
    points = spec._reference_points() + spec._variant_points(heuristic=only_h)
    fits = suite_fits(suites, spec.general, spec.settings)
    return PreparedSweep(spec, suites, checkpoints, identities, heuristic, points, fits)


def suite_fits(suites: Sequence[Any], model: str | Path, defaults: GenerationSettings) -> dict[str, SuiteFit]:
    """How the chat suites' prompts fit `model`'s context (lm-eval suites truncate as lm-eval itself does)."""
    from engine.prompt_fit import check_fit
    from evals.lm_eval_suite import LMEvalSuite

    chat = [s for s in suites if not isinstance(s, LMEvalSuite)]
    return check_fit(model, {s.name: (s.prompts(), suite_settings(s, defaults).max_tokens) for s in chat})


def variant_identity(config: MergeConfig, identities: Mapping[str, str]) -> dict[str, Any]:
    """The config with every checkpoint path replaced by its content identity: moving a folder keeps results,
    changing a checkpoint's weights invalidates them."""

    # The config may spell a path as given or resolved; both map to the checkpoint's identity.
    by_text = dict(identities)
    by_text.update({str(Path(path).resolve()): ident for path, ident in identities.items()})

    def swap(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: swap(v) for k, v in node.items()}
        if isinstance(node, list):
            return [swap(v) for v in node]
        if isinstance(node, str) and node in by_text:
            return f"checkpoint:{by_text[node]}"
        return node

    return {"config": swap(yaml.safe_load(config.to_yaml()))}


def suite_settings(suite: Suite, defaults: GenerationSettings) -> GenerationSettings:
    """The suite's `generation:` block over the sweep's defaults, key by key."""
    values = {**defaults.to_dict(), **dict(suite.generation or {})}
    return GenerationSettings.from_mapping(values, where=f"suite {suite.name} generation")


def serving_settings(
    settings: GenerationSettings, backend: Backend, fit: SuiteFit | None = None
) -> dict[str, Any]:
    """What a result's store key records of how it was generated: the sampling settings, the serving dtype
    (float32 and bfloat16 replies differ; a backend must know its dtype before its engine starts) and, where
    some prompt did not fit as asked, the context limit that cut it."""
    out = settings.to_dict()
    dtype = getattr(backend, "dtype", None)
    if dtype is not None:
        out["serving_dtype"] = str(dtype)
    if fit is not None and fit.affected:
        out["context_limit"] = fit.limit
    return out


# One generation request: (variant or None for the start model, chat prompts, per-prompt settings).
Job = tuple["MergeConfig | None", list[list[dict[str, str]]], list[GenerationSettings]]


@dataclass
class _PointPlan:
    """One point's store keys, the suite results already stored, the variant to swap in, and the generation job
    for the rest."""

    vkey: str
    keys: dict[str, str]
    results: dict[str, SuiteResult]
    todo: list[Suite]
    variant: MergeConfig | None
    job: Job | None


def _plan(
    point: Point,
    prepared: PreparedSweep,
    store: ResultStore,
    settings: Mapping[str, GenerationSettings],
    serving: Mapping[str, dict[str, Any]],
    start_model: Path,
) -> _PointPlan:
    from evals import SuiteResult

    identity = variant_identity(point.config, prepared.identities)
    keys = {s.name: result_key(identity, s.key(), serving[s.name]) for s in prepared.suites}
    results: dict[str, SuiteResult] = {}
    for suite in prepared.suites:
        stored = store.get(keys[suite.name])
        if stored is not None:
            results[suite.name] = SuiteResult.from_dict(stored["payload"])
    todo = [s for s in prepared.suites if s.name not in results]
    from evals.lm_eval_suite import LMEvalSuite

    # lm-eval suites drive the backend themselves (run_sweep); the job is the chat suites' prompts.
    chat = [s for s in todo if not isinstance(s, LMEvalSuite)]
    prompts: list[list[dict[str, str]]] = []
    per_prompt: list[GenerationSettings] = []
    for suite in chat:
        # Only the prompts that fit the context (engine.prompt_fit); each backend stops a reply where the context
        # ends, as the fit check counted (vLLM at max_model_len, transformers row by row).
        fit = prepared.fits.get(suite.name)
        budgets = fit.budgets if fit is not None else (0,) * len(suite.items)
        for prompt, budget in zip(suite.prompts(), budgets, strict=True):
            if budget is not None:
                prompts.append(prompt)
                per_prompt.append(settings[suite.name])
    variant = _variant(point, start_model)
    job = (variant, prompts, per_prompt) if chat else None
    return _PointPlan(stable_hash(identity)[:16], keys, results, todo, variant, job)


def _variant(point: Point, start_model: Path) -> MergeConfig | None:
    """The config to swap in for `point`; None for the reference that is the backend's own start model (no swap)."""
    if point.kind == "reference" and _loads(point.config) == start_model:
        return None
    return point.config


def generate_all(backend: Backend, jobs: list[Job]) -> Iterator[tuple[list[str], dict[str, float]]]:
    """(replies, timings) for each (variant, prompts, settings) job, in order. A backend with its own
    `generate_all` (an engine pool) runs jobs concurrently; one engine runs them one at a time, each only when
    asked for."""
    own = getattr(backend, "generate_all", None)
    if own is not None:
        yield from own(jobs)
        return
    for variant, prompts, per_prompt in jobs:
        replies = backend.generate(variant, prompts, per_prompt)
        yield replies, dict(backend.last_timings)


def run_sweep(
    spec: SweepSpec | PreparedSweep,
    backend: Backend,
    store: ResultStore,
    on_progress: Progress | None = None,
) -> Iterator[PointResult]:
    """Evaluate every point; yields each PointResult as it finishes. Each (point, suite) result is committed to
    the store the moment it is scored, so stopping (or crashing) at any time loses nothing already done."""
    from evals import aggregate

    prepared = spec if isinstance(spec, PreparedSweep) else prepare_sweep(spec)
    spec = prepared.spec
    sweep_id = store.begin_sweep(prepared.store_spec())
    settings = {s.name: suite_settings(s, spec.settings) for s in prepared.suites}
    serving = {
        name: serving_settings(value, backend, prepared.fits.get(name)) for name, value in settings.items()
    }
    start_model = Path(getattr(backend, "start_model", "")).resolve()
    total = len(prepared.points)

    plans = [_plan(point, prepared, store, settings, serving, start_model) for point in prepared.points]
    # Generation is asked for lazily, point by point in order (a pool runs ahead on its other engines): the
    # store is written as each point's replies arrive, so a stop at any time keeps every finished point.
    outputs = generate_all(backend, [plan.job for plan in plans if plan.job])

    for index, (point, plan) in enumerate(zip(prepared.points, plans, strict=True)):
        vkey, keys, results, todo = plan.vkey, plan.keys, plan.results, plan.todo
        timings = {"swap_s": 0.0, "generate_s": 0.0, "score_s": 0.0}
        if todo:
            fresh = _evaluate_lm_eval(todo, backend, plan.variant, timings)
            replies: list[str] = []
            if plan.job:
                replies, generated = next(outputs)
                for name in ("swap_s", "generate_s"):
                    timings[name] += generated.get(name, 0.0)
            begin = time.perf_counter()
            offset = 0
            for suite in todo:
                if suite.name in fresh:
                    result = fresh[suite.name]
                else:
                    fit = prepared.fits.get(suite.name)
                    sent = len(suite.items) - (len(fit.too_long) if fit is not None else 0)
                    result = _score_chat(suite, replies[offset : offset + sent], fit)
                    offset += sent
                results[suite.name] = result
                store.put(
                    keys[suite.name],
                    variant=vkey,
                    suite=suite.key(),
                    payload=result.to_dict(),
                    timings=timings,
                )
            timings["score_s"] = time.perf_counter() - begin
        ordered = [results[s.name] for s in prepared.suites]
        scores = aggregate(ordered)
        composites = composite_scores(point_scores(scores, ordered), spec.composites)
        result = PointResult(
            label=point.label,
            kind=point.kind,
            weights=point.weights,
            scores=scores,
            suite_results=ordered,
            timings=timings,
            key=vkey,
            cached=not todo,
            heuristic=point.heuristic,
            config=point.config,
            composites=composites,
        )
        store.record_point(
            sweep_id,
            index,
            label=point.label,
            kind=point.kind,
            weights=point.weights,
            variant=vkey,
            result_keys={s.name: keys[s.name] for s in prepared.suites},
            scores={
                "aggregates": result.aggregates(),
                "scores": scores.to_dict(),
                "heuristic": point.heuristic,
                # Suites whose prompts did not all fit the context (only when some did not).
                **({"context": context} if (context := _context_records(ordered)) else {}),
            },
            timings=timings,
        )
        if on_progress is not None:
            on_progress(index, total, result)
        yield result


def _score_chat(suite: Suite, replies: list[str], fit: SuiteFit | None) -> SuiteResult:
    """Score a chat suite from the replies to its prompts that were sent; the prompts too long for the context
    (never sent) get an empty reply and count as failed."""
    from evals import score_suite
    from evals.aggregate import count_too_long

    if fit is None or not fit.affected:
        return score_suite(suite, replies)
    answers = iter(replies)
    full = ["" if budget is None else next(answers) for budget in fit.budgets]
    return count_too_long(score_suite(suite, full), fit.too_long, fit.record())


def _context_records(results: Sequence[SuiteResult]) -> dict[str, dict[str, Any]]:
    return {r.suite: r.context for r in results if getattr(r, "context", None)}


def _evaluate_lm_eval(
    suites: Sequence[Any], backend: Backend, variant: MergeConfig | None, timings: dict[str, float]
) -> dict[str, SuiteResult]:
    """Run the `lm-eval:` suites among `suites` on `variant` (lm-eval drives the backend itself); their time is
    added to the point's generate_s (swap_s: the first call's swap)."""
    from evals.lm_eval_suite import LMEvalSuite

    out: dict[str, SuiteResult] = {}
    for suite in suites:
        if isinstance(suite, LMEvalSuite):
            from engine.lm_eval_model import evaluate_suite

            begin = time.perf_counter()
            swaps = getattr(backend, "swaps", 0)
            out[suite.name] = evaluate_suite(suite, backend, variant)
            spent = time.perf_counter() - begin
            swap_s = backend.last_timings.get("swap_s", 0.0) if getattr(backend, "swaps", 0) != swaps else 0.0
            timings["swap_s"] += swap_s
            timings["generate_s"] += spent - swap_s
    return out


def point_scores(scores: Scores, results: Sequence[SuiteResult]) -> dict[str, Score]:
    """Every score a composite may name: each suite's own (by suite name) and the pooled aggregates."""
    out: dict[str, Score] = {r.suite: r.score for r in results}
    if scores.general is not None:
        out["general"] = scores.general
    out.update({f"skill:{k}": v for k, v in scores.skills.items()})
    if scores.harmful_refusal is not None:
        out["harmful_refusal"] = scores.harmful_refusal
    if scores.benign_compliance is not None:
        out["benign_compliance"] = scores.benign_compliance
    return out


def check_composites(composites: Mapping[str, Sequence[str]], suites: Sequence[Any]) -> None:
    """Each composite names existing suites (by name, or by the `lm-eval:` entry that loaded them) or aggregates;
    an `lm-eval:` entry given by path is rewritten to its suite name in place."""
    by_ref = {getattr(s, "ref", s.name): s.name for s in suites}
    known = {s.name for s in suites} | {"general", "harmful_refusal", "benign_compliance"}
    known |= {s.aggregate for s in suites if s.aggregate.startswith("skill:")}
    for name, members in composites.items():
        if not _NAME_RE.match(name):
            raise ConfigError(f"--composite {name!r}: name must be letters, digits, '_', '.', '-'")
        if not members:
            raise ConfigError(f"--composite {name}: names no suites")
        resolved = [by_ref.get(m, m) for m in members]
        unknown = [m for m in resolved if m not in known]
        if unknown:
            raise ConfigError(
                f"--composite {name}: unknown suite(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        if isinstance(members, list):
            members[:] = resolved


def composite_scores(
    available: Mapping[str, Score], composites: Mapping[str, Sequence[str]]
) -> dict[str, Score]:
    from evals.composite import composite_score

    return {
        name: composite_score([available[m] for m in members])
        for name, members in composites.items()
        if all(m in available for m in members)
    }


def _loads(config: MergeConfig) -> Path | None:
    from engine.backends.base import single_checkpoint

    path = single_checkpoint(config)
    return None if path is None else Path(path).resolve()
