"""CLI subcommands. Each module exposes `add_arguments(parser)` and `run(args) -> int` (exit code)."""
