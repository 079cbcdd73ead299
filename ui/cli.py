"""`mergescope ui`: launch the dashboard. With no arguments it opens on the embedded demo family, ready to sweep,
bound to 127.0.0.1. Exposing it (`--host 0.0.0.0`, `--share`) is an explicit choice; `--auth` adds a login."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from engine.commands.engine_args import add_engine_arguments, backend_options
from engine.errors import ConfigError, MergescopeError

if TYPE_CHECKING:
    from engine.backends.base import Backend

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 7860
REPO_ASSETS = Path(__file__).resolve().parent.parent / "assets"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        default=None,
        help="interface to bind (default $GRADIO_SERVER_NAME, else 127.0.0.1: this machine only)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="port (default $GRADIO_SERVER_PORT, else 7860; 0 picks a free one)",
    )
    parser.add_argument(
        "--share", action="store_true", help="also open a public Gradio share link (explicit opt-in)"
    )
    parser.add_argument("--auth", metavar="USER:PASS", help="require this login")
    parser.add_argument(
        "--allowed-root",
        action="append",
        default=[],
        metavar="DIR",
        help="folder the UI may read checkpoints from and write exports to (repeatable; default: the repo's "
        "assets and the working directory)",
    )
    add_engine_arguments(parser)
    parser.add_argument("--weights", default="0:1:0.1", help="the ω values the page opens with")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="run sweeps on N engines of their own as Ray actors, so a sweep does not hold up the chat's engine "
        "(default 0: sweeps and chat share one engine)",
    )
    parser.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="the sweep pool joins this Ray cluster (e.g. auto) instead of starting a local one",
    )


def sweep_pool_factory(args: argparse.Namespace) -> Callable[[Path], Backend] | None:
    """The sweep pool's factory for `--workers N` / `--ray-address` (None: sweeps share the chat's engine)."""
    if args.workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {args.workers}")
    if args.workers == 0 and not args.ray_address:
        return None
    workers = max(args.workers, 1)

    def start(general: Path) -> Backend:
        from engine.pool import EnginePool

        return EnginePool(general, workers, backend_options(args), address=args.ray_address)

    return start


def server_address(
    host: str | None, port: int | None, env: Mapping[str, str] | None = None
) -> tuple[str, int]:
    """--host/--port, else Gradio's own GRADIO_SERVER_NAME / GRADIO_SERVER_PORT, else loopback:7860."""
    env = os.environ if env is None else env
    host = host or env.get("GRADIO_SERVER_NAME") or DEFAULT_HOST
    if port is None:
        text = env.get("GRADIO_SERVER_PORT") or str(DEFAULT_PORT)
        try:
            port = int(text)
        except ValueError as exc:
            raise ConfigError(f"GRADIO_SERVER_PORT={text!r}: not a port number") from exc
    return host, port


def parse_auth(text: str | None) -> tuple[str, str] | None:
    if not text:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise ConfigError(f"--auth {text!r}: expected USER:PASS")
    return user, password


def run(args: argparse.Namespace) -> int:
    from engine.backends import make_backend
    from ui.app import build_app, launch

    auth = parse_auth(args.auth)
    host, port = server_address(args.host, args.port)
    roots = args.allowed_root or [str(p) for p in (REPO_ASSETS, Path.cwd()) if p.is_dir()]
    try:
        from engine.demo import load_family

        family = load_family()
    except (ImportError, OSError, MergescopeError) as exc:
        print(f"note: demo family unavailable ({exc}); fields start empty", file=sys.stderr)
        family = None
    if (args.share or host not in ("127.0.0.1", "localhost", "::1")) and auth is None:
        print("warning: the dashboard is reachable from other machines without --auth", file=sys.stderr)
    app = build_app(
        store_path=args.store,
        allowed_roots=roots,
        backend_factory=lambda start: make_backend(start, **backend_options(args)),
        family=family,
        default_weights=args.weights,
        warm_up=True,
        sweep_backend_factory=sweep_pool_factory(args),
    )
    try:
        launch(app, host=host, port=port or None, share=args.share, auth=auth, block=False)
        print(f"mergescope dashboard: {app.local_url}", file=sys.stderr)
        if app.share_url:
            print(f"public share link: {app.share_url}", file=sys.stderr)
        app.block_thread()
    finally:
        app.close()
        app.mergescope_close_engines()
    return 0
