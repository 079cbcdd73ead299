"""Run the installed mergekit 0.1.5 on a batch of configs in one subprocess (its import costs seconds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SEED = 1234  # mergekit's `random_seed`; `mergescope merge --seed` takes the same to draw the same masks

SCRIPT = """
import json, sys, yaml
from mergekit.config import MergeConfiguration
from mergekit.merge import run_merge
from mergekit.options import MergeOptions
results = {}
for config_path, out, copy_tokenizer in json.loads(sys.argv[1]):
    try:
        config = MergeConfiguration.model_validate(yaml.safe_load(open(config_path)))
        run_merge(config, out, MergeOptions(quiet=True, random_seed=int(sys.argv[2]), copy_tokenizer=copy_tokenizer))
        results[out] = None
    except Exception as exc:
        results[out] = f"{type(exc).__name__}: {exc}"
print("RESULTS" + json.dumps(results))
"""


def run_mergekit(jobs: list[tuple[Path, Path, bool]]) -> dict[str, str | None]:
    """(config, out folder, copy tokenizer) per job -> out folder: None on success, else mergekit's error."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    payload = json.dumps([(str(c), str(o), t) for c, o, t in jobs])
    proc = subprocess.run([sys.executable, "-c", SCRIPT, payload, str(SEED)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS"))
    return json.loads(line.removeprefix("RESULTS"))
