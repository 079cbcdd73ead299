"""Scoring a suite's replies and pooling suite results into the scores the UI and store show.

Pooling rule: an aggregate (general, each skill, each safety side) is the fraction of correct items over all
its suites' items taken together — each suite weighted by its item count. With equal-sized suites this is
exactly the mean of the suite scores; in every case it is one binomial proportion, so its Wilson interval
is exact in the same sense as a single suite's (averaging suites instead would need a different interval).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from evals.errors import SuiteError
from evals.refusal import RefusalClassifier
from evals.stats import Score
from evals.suite import Suite


@dataclass(frozen=True)
class SuiteResult:
    suite: str  # suite name
    suite_key: str  # Suite.key()
    aggregate: str  # resolved aggregate: general | skill:<name> | safety:harmful | safety:benign
    score: Score
    per_item: list[bool]
    item_ids: list[str]
    replies: list[str]
    scorer: str  # scorer name, plus the refusal classifier identity where one was used
    categories: list[str | None] = field(default_factory=list)  # each item's category (None: none given)
    outcomes: list[str] | None = (
        None  # each item's outcome label where the scorer gives one (refusal class...)
    )
    # How the prompts fitted the model's context, where some did not fit as asked (engine.prompt_fit): the limit,
    # how many prompts were too long (their items count as failed: see `too_long_ids`), how many replies were cut.
    context: dict[str, Any] | None = None
    too_long_ids: list[str] = field(default_factory=list)

    def by_category(self) -> dict[str, Score]:
        """Score per item category (items without one are left out), e.g. to see which kinds of benign
        prompts a variant over-refuses."""
        groups: dict[str, list[bool]] = {}
        for cat, ok in zip(self.categories, self.per_item, strict=False):
            if cat is not None:
                groups.setdefault(cat, []).append(ok)
        return {c: Score.from_counts(sum(v), len(v)) for c, v in sorted(groups.items())}

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "suite_key": self.suite_key,
            "aggregate": self.aggregate,
            "score": self.score.to_dict(),
            "per_item": list(self.per_item),
            "item_ids": list(self.item_ids),
            "replies": list(self.replies),
            "scorer": self.scorer,
            "categories": list(self.categories),
            "outcomes": None if self.outcomes is None else list(self.outcomes),
            # Only where some prompt did not fit, so other results keep their stored shape.
            **(
                {"context": dict(self.context), "too_long_ids": list(self.too_long_ids)}
                if self.context
                else {}
            ),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SuiteResult:
        return cls(
            suite=d["suite"],
            suite_key=d["suite_key"],
            aggregate=d["aggregate"],
            score=Score.from_dict(d["score"]),
            per_item=[bool(x) for x in d["per_item"]],
            item_ids=list(d["item_ids"]),
            replies=list(d["replies"]),
            scorer=d["scorer"],
            categories=list(d.get("categories") or [None] * len(d["per_item"])),
            outcomes=None if d.get("outcomes") is None else list(d["outcomes"]),
            context=None if d.get("context") is None else dict(d["context"]),
            too_long_ids=list(d.get("too_long_ids") or []),
        )


def score_suite(
    suite: Suite, replies: Sequence[str], *, classifier: RefusalClassifier | None = None
) -> SuiteResult:
    """Score one suite's replies (one per item, in item order).

    `classifier` replaces the refusal classifier for refusal suites (e.g. a model-based judge); by default a
    refusal suite uses its own `scorer_args.phrases` if it has them, else the default phrase classifier.
    """
    replies = list(replies)
    if len(replies) != len(suite.items):
        raise SuiteError(f"suite {suite.name}: got {len(replies)} replies for {len(suite.items)} items")
    for i, r in enumerate(replies):
        if not isinstance(r, str):
            raise SuiteError(
                f"suite {suite.name}: reply {i} (item {suite.items[i].id}) is {type(r).__name__}, not str"
            )
    per_item, outcomes = suite.scorer_impl.score_detailed(suite.items, replies, suite.scorer_args, classifier)
    return SuiteResult(
        suite=suite.name,
        suite_key=suite.key(),
        aggregate=suite.aggregate,
        score=Score.from_counts(sum(per_item), len(per_item)),
        per_item=per_item,
        item_ids=[it.id for it in suite.items],
        replies=replies,
        scorer=suite.scorer_impl.identity(suite.scorer_args, classifier),
        categories=[it.category for it in suite.items],
        outcomes=outcomes,
    )


TOO_LONG = "too_long"  # the outcome label of an item whose prompt did not fit the model's context


def count_too_long(result: SuiteResult, too_long: Sequence[int], context: Mapping[str, Any]) -> SuiteResult:
    """`result` with the items at indices `too_long` (prompts that did not fit the model's context, so never
    generated) counted as failed whatever their empty reply scored, labelled `too_long` in the outcomes, and
    `context` (engine.prompt_fit's record) kept with it. The score is recomputed over all items."""
    bad = set(too_long)
    per_item = [ok and i not in bad for i, ok in enumerate(result.per_item)]
    outcomes = result.outcomes
    if outcomes is not None:
        outcomes = [TOO_LONG if i in bad else o for i, o in enumerate(outcomes)]
    return replace(
        result,
        score=Score.from_counts(sum(per_item), len(per_item)),
        per_item=per_item,
        outcomes=outcomes,
        context=dict(context),
        too_long_ids=[result.item_ids[i] for i in sorted(bad)],
    )


@dataclass(frozen=True)
class Scores:
    general: Score | None = None
    skills: dict[str, Score] = field(default_factory=dict)  # safety:harmful also sits at skills["safety"]
    harmful_refusal: Score | None = None
    benign_compliance: Score | None = None
    suites: dict[str, Score] = field(default_factory=dict)  # every suite's own score, by suite name

    @property
    def over_refusal(self) -> Score | None:
        """1 - benign compliance, with the interval mirrored."""
        b = self.benign_compliance
        return None if b is None else Score(1.0 - b.value, b.n, 1.0 - b.hi, 1.0 - b.lo)

    def to_dict(self) -> dict[str, Any]:
        def s(x: Score | None) -> dict | None:
            return None if x is None else x.to_dict()

        return {
            "general": s(self.general),
            "skills": {k: v.to_dict() for k, v in self.skills.items()},
            "harmful_refusal": s(self.harmful_refusal),
            "benign_compliance": s(self.benign_compliance),
            "suites": {k: v.to_dict() for k, v in self.suites.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Scores:
        def s(x: Mapping | None) -> Score | None:
            return None if x is None else Score.from_dict(x)

        return cls(
            general=s(d.get("general")),
            skills={k: Score.from_dict(v) for k, v in (d.get("skills") or {}).items()},
            harmful_refusal=s(d.get("harmful_refusal")),
            benign_compliance=s(d.get("benign_compliance")),
            suites={k: Score.from_dict(v) for k, v in (d.get("suites") or {}).items()},
        )


def _pool(results: Iterable[SuiteResult]) -> Score | None:
    k = n = 0
    for r in results:
        k += sum(r.per_item)
        n += len(r.per_item)
    return Score.from_counts(k, n) if n else None


def aggregate(results: Sequence[SuiteResult]) -> Scores:
    """Pool suite results into general / per-skill / safety scores (see the module docstring)."""
    names: set[str] = set()
    for r in results:
        if r.suite in names:
            raise SuiteError(f"aggregate: suite {r.suite!r} appears twice in the results")
        names.add(r.suite)
    by_agg: dict[str, list[SuiteResult]] = {}
    for r in results:
        by_agg.setdefault(r.aggregate, []).append(r)
    skills: dict[str, Score] = {}
    for agg, rs in sorted(by_agg.items()):
        if agg.startswith("skill:"):
            skills[agg.removeprefix("skill:")] = _pool(rs)  # type: ignore[assignment]
    harmful = _pool(by_agg.get("safety:harmful", []))
    if harmful is not None:
        if "safety" in skills:
            # A suite declared skill:safety and harmful-refusal suites would both claim the name.
            raise SuiteError(
                "aggregate: 'skill:safety' clashes with the safety:harmful suites' skills['safety']"
            )
        skills["safety"] = harmful
    return Scores(
        general=_pool(by_agg.get("general", [])),
        skills=skills,
        harmful_refusal=harmful,
        benign_compliance=_pool(by_agg.get("safety:benign", [])),
        suites={r.suite: r.score for r in results},
    )
