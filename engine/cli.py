"""The `mergescope` command line: merge, evaluate, plot, chat, export. Each subcommand is a thin wrapper over an
engine entry point, so every dashboard action has a headless twin."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
import threading
import warnings
from collections.abc import Iterator

from engine.errors import MergescopeError, MergescopeWarning
from engine.fs import describe_os_error

# name -> (module, one-line help). Modules are imported only when their command runs, so `mergescope inspect`
# does not pay for importing vLLM or Gradio.
COMMANDS: dict[str, tuple[str, str]] = {
    "inspect": ("engine.commands.inspect", "compatibility report for a set of checkpoints"),
    "merge": ("engine.commands.merge", "merge checkpoints from a mergekit YAML config"),
    "sweep": ("engine.commands.sweep", "sweep mixture weights, evaluate every point, store the results"),
    "browse": ("engine.commands.browse", "a stored sweep's replies item by item across ω (behaviour table)"),
    "ui": ("ui.cli", "launch the dashboard (default: the embedded demo family)"),
    "demo": ("engine.commands.demo", "regenerate (and verify) the embedded demo family with its recipe"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mergescope", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        # Only the chosen command's module is imported to add its arguments.
        if name == chosen:
            importlib.import_module(module_name).add_arguments(command_parser)
    return parser


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """`kill PID` (SIGTERM) ends a command through the same path as Ctrl-C, so a merge removes its temporary
    folder and a sweep or the dashboard shuts the engine's worker processes down instead of orphaning them."""
    if threading.current_thread() is not threading.main_thread():
        yield  # handlers can only be set from the main thread
        return

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def warnings_as_lines() -> Iterator[None]:
    """Our warnings (silent fallbacks made visible) print as `warning: <message>`, every time, without the
    source line Python would add."""
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, MergescopeWarning):
            print(f"warning: {message}", file=sys.stderr, flush=True)
        else:
            previous(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.simplefilter("always", MergescopeWarning)
        warnings.showwarning = show
        yield


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        with sigterm_as_interrupt(), warnings_as_lines():
            return int(module.run(args) or 0)
    except MergescopeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # The last resort of the one OS-error mapping (engine.fs): a failure no writer wrapped still names its
        # path and reason instead of a traceback.
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
