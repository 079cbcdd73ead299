"""mergescope evals: suites (prompt sets + scorers), refusal classifier, aggregation into scores."""
