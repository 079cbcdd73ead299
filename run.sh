#!/usr/bin/env bash
# The two front-door commands (see README):
#   ./run.sh ui   [mergescope ui options]   launch the dashboard on the embedded demo family
#   ./run.sh test [pytest options]          run the test suite
# Both create or refresh .venv first (quick when current). Any other word runs `mergescope WORD ...`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cmd="${1:-ui}"; shift || true
case "$cmd" in
  test)
    "$root/scripts/setup_env.sh" --browser
    cd "$root" && exec "$root/.venv/bin/python" -m pytest "$@" ;;
  *)
    "$root/scripts/setup_env.sh"
    exec "$root/.venv/bin/mergescope" "$cmd" "$@" ;;
esac
