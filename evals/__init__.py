"""mergescope evals: suites (prompt sets + scorers), refusal classifier, aggregation into scores.

Knows nothing of merging or serving: it turns (suite, replies) into scores.
"""

from evals.aggregate import Scores, SuiteResult, aggregate, score_suite
from evals.errors import SuiteError
from evals.judge import RuleRefusalJudge
from evals.refusal import (
    DEFAULT_REFUSAL_PHRASES,
    PhraseRefusalClassifier,
    RefusalClassifier,
    default_classifier,
    is_refusal,
    load_phrases,
)
from evals.scorers import SCORERS
from evals.stats import Score, wilson_interval
from evals.suite import Item, Suite, load_suite, load_suites

__all__ = [
    "DEFAULT_REFUSAL_PHRASES",
    "SCORERS",
    "Item",
    "PhraseRefusalClassifier",
    "RefusalClassifier",
    "RuleRefusalJudge",
    "Score",
    "Scores",
    "Suite",
    "SuiteError",
    "SuiteResult",
    "aggregate",
    "default_classifier",
    "is_refusal",
    "load_phrases",
    "load_suite",
    "load_suites",
    "score_suite",
    "wilson_interval",
]
