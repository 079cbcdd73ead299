"""lm-evaluation-harness tasks as sweep suites: `lm-eval:TASK` (a task, group or tag lm-eval knows, its data from
the user's datasets cache) or `lm-eval:path/to/task.yaml` (a local task, e.g. `dataset_path: json` with
`data_files`; relative data files resolve against the YAML's folder), optionally with task options after an
`@`: `lm-eval:TASK@fewshot=5,limit=50` (lm-eval's --num_fewshot and --limit; part of the suite's name and key).

The task is loaded once (dataset included), before any engine starts; every sweep point then runs it through an
lm-eval model class on the swapped engine (`engine.lm_eval_model`) and `result_from_samples` turns lm-eval's
per-sample records into a SuiteResult like any suite's. Scoring is lm-eval's own: its metric functions, filters
and aggregation. Knows nothing of serving.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals.errors import SuiteError
from evals.stats import Score

PREFIX = "lm-eval:"
# Task options after the task: `lm-eval:TASK@fewshot=5,limit=50` (lm-eval's --num_fewshot and --limit). Parsed
# from the last '@' when everything after it is KEY=VALUE pairs, so a path with an '@' in it still works.
OPTIONS = ("fewshot", "limit")
_ALIASES = {"num_fewshot": "fewshot"}
_OPTION_PAIR = re.compile(r"^(?P<key>[A-Za-z_]+)=(?P<value>[^,@=]*)$")
# lm-eval's own default few-shot seed (simple_evaluate's fewshot_random_seed): the examples drawn for each
# document are the same at every sweep point and in the user's own lm-eval run.
FEWSHOT_SEED = 1234
# lm-eval suites keep their own scores (the suite's name, e.g. "lm-eval:arc_easy"), not pooled into general:
# a task's size would outweigh the others. A composite axis (`evals.composite`) averages chosen suites instead.
AGGREGATE = "lm-eval"
_ADDRESS = re.compile(r" at 0x[0-9a-f]+")


def is_lm_eval_ref(ref: str | Path) -> bool:
    return str(ref).startswith(PREFIX)


def is_option_part(part: str) -> bool:
    """Whether one piece of a comma list is a task option (`limit=50`) that belongs to the `lm-eval:TASK@...`
    entry before it, not a suite of its own."""
    match = _OPTION_PAIR.match(part.strip())
    return bool(match) and _ALIASES.get(match["key"], match["key"]) in OPTIONS


def join_option_parts(parts: list[str]) -> list[str]:
    """A comma-split list with the options of `lm-eval:TASK@fewshot=5,limit=50` put back on their entry:
    `[xstest, lm-eval:t@fewshot=5, limit=50]` -> `[xstest, lm-eval:t@fewshot=5,limit=50]`."""
    out: list[str] = []
    for part in parts:
        if out and is_lm_eval_ref(out[-1]) and "@" in out[-1] and is_option_part(part):
            out[-1] = f"{out[-1]},{part.strip()}"
        else:
            out.append(part)
    return out


def _option_value(ref: str, key: str, text: str) -> int | float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if key == "fewshot":
        if value != value or value < 0 or value != int(value):
            raise SuiteError(f"{ref}: fewshot={text!r} must be a whole number >= 0")
        return int(value)
    # limit: a number of documents per task (>= 1), or a fraction of them (0 < x < 1), as lm-eval's --limit.
    if value != value or value <= 0 or (value >= 1 and value != int(value)):
        raise SuiteError(f"{ref}: limit={text!r} must be a whole number >= 1 or a fraction between 0 and 1")
    return int(value) if value >= 1 else value


def split_options(ref: str) -> tuple[str, dict[str, int | float]]:
    """`lm-eval:TASK@fewshot=5,limit=50` -> (`TASK`, {"fewshot": 5, "limit": 50}); no options: ({}). Raises
    SuiteError naming the entry for an unknown option, a repeated one or a bad value."""
    spec = ref.removeprefix(PREFIX).strip()
    target, sep, tail = spec.rpartition("@")
    pairs = [_OPTION_PAIR.match(p.strip()) for p in tail.split(",")] if sep else []
    if not sep or not target or not all(pairs):
        return spec, {}  # no options (an '@' in a path or task name stays)
    options: dict[str, int | float] = {}
    for match in pairs:
        key = _ALIASES.get(match["key"], match["key"])
        if key not in OPTIONS:
            raise SuiteError(
                f"{ref}: unknown task option {match['key']!r} (known: {', '.join(OPTIONS)}, e.g. "
                f"lm-eval:TASK@fewshot=5,limit=50)"
            )
        if key in options:
            raise SuiteError(f"{ref}: task option {key!r} given twice")
        options[key] = _option_value(ref, key, match["value"])
    return target.strip(), options


def format_options(options: Mapping[str, int | float]) -> str:
    """The canonical `@fewshot=5,limit=50` suffix of a suite name ('' without options)."""
    given = [f"{key}={options[key]:g}" for key in OPTIONS if key in options]
    return f"@{','.join(given)}" if given else ""


@dataclass(eq=False)
class LMEvalSuite:
    """One `lm-eval:` entry of a sweep: lm-eval's loaded tasks (a group or tag may hold several) and what keys
    their results in the store. Duck-types the parts of `evals.Suite` the sweep reads (name, key(), items)."""

    ref: str  # as given, e.g. "lm-eval:arc_easy" or "lm-eval:tests/data/task.yaml"
    name: str  # "lm-eval:<task or group name>"
    task_dict: dict[str, Any]  # lm-eval's TaskManager.load() result: {"tasks", "groups", "group_map"}
    version: str
    fingerprint: str
    aggregate: str = AGGREGATE
    generation: Mapping[str, Any] = field(default_factory=dict)  # the tasks carry their own settings
    options: Mapping[str, int | float] = field(default_factory=dict)  # fewshot, limit (see OPTIONS)

    @property
    def tasks(self) -> dict[str, Any]:
        return self.task_dict["tasks"]

    @property
    def limit(self) -> int | float | None:
        return self.options.get("limit")

    def doc_count(self, task: Any) -> int:
        """How many of the task's evaluation documents are scored (all, or the first `limit`, as lm-eval)."""
        return _doc_count(task, self.limit)

    @property
    def items(self) -> list[str]:
        """Item ids: `<task>/<doc_id>` over every leaf task's evaluated documents."""
        return [f"{name}/{i}" for name, task in self.tasks.items() for i in range(self.doc_count(task))]

    def __len__(self) -> int:
        return sum(self.doc_count(task) for task in self.tasks.values())

    def reseed(self) -> None:
        """Reset every task's few-shot sampler to lm-eval's default seed, before each evaluation: otherwise
        each point would draw other examples than the last (the sampler's state carries over)."""
        for task in self.tasks.values():
            task.set_fewshot_seed(seed=FEWSHOT_SEED)

    def key(self) -> str:
        return f"{self.name}@{self.version}:{self.fingerprint}"

    def metric(self, task_name: str) -> str:
        """The task's primary metric: the first of its metric_list (lm-eval reports it first too)."""
        metrics = self.tasks[task_name].config.metric_list or []
        names = [m["metric"] for m in metrics if isinstance(m, Mapping) and isinstance(m.get("metric"), str)]
        if names:
            return names[0]
        defaults = list(self.tasks[task_name].aggregation())
        if not defaults:
            raise SuiteError(f"{self.ref}: task {task_name} reports no metric")
        return defaults[0]


def _json_default(obj: Any) -> str:
    # Functions (process_docs, filters) by name: their repr holds a memory address that changes every run.
    return _ADDRESS.sub("", getattr(obj, "__qualname__", None) or repr(obj))


def _doc_count(task: Any, limit: int | float | None) -> int:
    total = len(task.eval_docs)
    if limit is None:
        return total
    return min(total, math.ceil(total * limit) if limit < 1 else int(limit))  # lm-eval's get_sample_size


def _fingerprint(task_dict: Mapping[str, Any], options: Mapping[str, int | float]) -> str:
    """Hash of what decides a result: lm-eval's version, each task's full config (num_fewshot included), its
    evaluated documents (so a new release of the data, or an edited local file, is a new key) and the options."""
    from importlib.metadata import version

    digest = hashlib.sha256(f"lm_eval {version('lm_eval')}\n".encode())
    if options:  # only when given, so entries without options keep their keys
        digest.update(json.dumps(dict(options), sort_keys=True).encode())
    for name, task in sorted(task_dict["tasks"].items()):
        digest.update(json.dumps([name, task.dump_config()], sort_keys=True, default=_json_default).encode())
        docs = task.eval_docs
        for index in range(_doc_count(task, options.get("limit"))):
            digest.update(json.dumps(docs[index], sort_keys=True, default=_json_default).encode())
    return digest.hexdigest()[:16]


def _set_fewshot(ref: str, task_dict: Mapping[str, Any], fewshot: int) -> None:
    """Every task's num_fewshot, as lm-eval's --num_fewshot sets it; a task whose config fixes 0 shots (lm-eval
    would silently keep 0) is an error."""
    for name, task in task_dict["tasks"].items():
        if fewshot > 0 and task.get_config("num_fewshot") == 0:
            raise SuiteError(
                f"{ref}: task {name} fixes num_fewshot: 0 in its config; lm-eval ignores fewshot={fewshot}"
            )
        task.set_config(key="num_fewshot", value=fewshot)


def _resolve_data_files(config: dict[str, Any], folder: Path) -> None:
    """Relative `dataset_kwargs.data_files` entries resolve against the task YAML's folder, not the cwd."""
    kwargs = config.get("dataset_kwargs") or {}
    files = kwargs.get("data_files")

    def resolve(value: Any) -> Any:
        if isinstance(value, str) and "://" not in value and not Path(value).is_absolute():
            return str(folder / value)
        if isinstance(value, list):
            return [resolve(v) for v in value]
        if isinstance(value, dict):
            return {k: resolve(v) for k, v in value.items()}
        return value

    if files is not None:
        kwargs["data_files"] = resolve(files)


def _load_spec(ref: str, spec: str) -> tuple[Any, str | dict[str, Any]]:
    from lm_eval.tasks import TaskManager

    path = Path(spec)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise SuiteError(f"{ref}: no such task file {path}")
        from lm_eval.tasks._yaml_loader import load_yaml

        try:
            config = load_yaml(path)
        except Exception as exc:
            raise SuiteError(f"{ref}: cannot read task file {path}: {exc}") from exc
        if "task" not in config:
            raise SuiteError(f"{ref}: task file {path} has no 'task' field")
        _resolve_data_files(config, path.resolve().parent)
        return TaskManager(include_defaults=False), config
    manager = TaskManager()
    if spec not in manager.task_index:
        close = [n for n in manager.all_tasks if spec.lower() in n.lower()][:5]
        hint = f"; similar: {', '.join(close)}" if close else ""
        raise SuiteError(f"{ref}: lm-eval knows no task, group or tag {spec!r}{hint}")
    return manager, spec


def load_lm_eval_suite(ref: str | Path) -> LMEvalSuite:
    """Load an `lm-eval:` suite: the task(s) and their documents, now. Raises SuiteError naming the entry."""
    ref = str(ref)
    spec, options = split_options(ref)
    if not spec:
        raise SuiteError(
            f"{ref!r}: expected lm-eval:TASK or lm-eval:path/to/task.yaml (options: @fewshot=N,limit=N)"
        )
    try:
        import lm_eval  # noqa: F401
    except ImportError as exc:
        raise SuiteError(f"{ref}: lm-eval is not installed (pip install lm-eval==0.4.13)") from exc
    manager, what = _load_spec(ref, spec)
    try:
        task_dict = manager.load(what)
    except SuiteError:
        raise
    except Exception as exc:  # lm-eval raises many kinds: missing data offline, bad config fields, ...
        raise SuiteError(f"{ref}: lm-eval could not load the task: {type(exc).__name__}: {exc}") from exc
    if not task_dict.get("tasks"):
        raise SuiteError(f"{ref}: the entry names no tasks")
    groups = list(task_dict.get("groups") or {})
    name = groups[0] if len(groups) == 1 else "+".join(sorted(task_dict["tasks"]))
    versions = sorted({str(task.VERSION) for task in task_dict["tasks"].values()})
    for task_name, task in task_dict["tasks"].items():
        if not len(task.eval_docs):
            raise SuiteError(f"{ref}: task {task_name} has no evaluation documents")
    if "fewshot" in options:
        _set_fewshot(ref, task_dict, int(options["fewshot"]))
    return LMEvalSuite(
        ref=ref,
        name=f"{PREFIX}{name}{format_options(options)}",
        task_dict=task_dict,
        version=",".join(versions),
        fingerprint=_fingerprint(task_dict, options),
        options=options,
    )


def _binary(values: Sequence[float]) -> bool:
    return all(v in (0, 1) for v in values)


def _mean_score(values: Sequence[float]) -> Score:
    """A non-0/1 metric's mean with a normal-approximation 95% interval from the per-item spread."""
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    half = 1.96 * math.sqrt(var / n)
    return Score(value=mean, n=n, lo=mean - half, hi=mean + half)


def result_from_samples(suite: LMEvalSuite, samples: Mapping[str, Sequence[Mapping[str, Any]]]) -> Any:
    """A SuiteResult from lm-eval's logged samples (`evaluate(..., log_samples=True)["samples"]`). Each item's
    reply is a JSON record of what the model gave (lm-eval's filtered responses), the target and the metric.
    For 0/1 metrics (acc, exact_match, ...) the score is k/n with its Wilson interval and per_item the 0/1s; for
    any other metric the score is its mean over the items (a normal interval) and per_item stays empty."""
    from evals.aggregate import SuiteResult

    values: list[float] = []
    ids: list[str] = []
    replies: list[str] = []
    categories: list[str | None] = []
    metrics = []
    for task_name in suite.tasks:
        metric = suite.metric(task_name)
        metrics.append(metric)
        rows = sorted(samples.get(task_name) or [], key=lambda r: r["doc_id"])
        if not rows:
            raise SuiteError(f"{suite.ref}: lm-eval returned no samples for task {task_name}")
        for row in rows:
            if metric not in row:
                raise SuiteError(f"{suite.ref}: task {task_name}'s samples lack metric {metric!r}")
            value = float(row[metric])
            values.append(value)
            ids.append(f"{task_name}/{row['doc_id']}")
            replies.append(
                json.dumps(
                    {"response": row.get("filtered_resps"), "target": row.get("target"), metric: value},
                    default=str,
                    ensure_ascii=False,
                )
            )
            categories.append(task_name if len(suite.tasks) > 1 else None)
    binary = _binary(values)
    score = Score.from_counts(int(sum(values)), len(values)) if binary else _mean_score(values)
    return SuiteResult(
        suite=suite.name,
        suite_key=suite.key(),
        aggregate=suite.aggregate,
        score=score,
        per_item=[v == 1 for v in values] if binary else [],
        item_ids=ids,
        replies=replies,
        scorer=f"lm-eval/{'+'.join(dict.fromkeys(metrics))}",
        categories=categories,
    )
