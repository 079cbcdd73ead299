"""Merge benchmark: mergescope vs mergekit vs the machine's streaming limit, wall time and peak RSS.

    .venv/bin/python bench/merge_bench.py [--size-gb 1.5] [--work DIR] [--device cpu|cuda] [--methods ...]

Builds (once, cached in --work) a synthetic Llama-shaped family: a base and two fine-tunes, float32, sharded
with an index, each about --size-gb. Then, in one run, each as a separate process (whole-process wall time,
imports included; peak RSS from the kernel's rusage of that process):
  - mergescope task_arithmetic and ties (`mergescope merge`; `--methods` picks others: breadcrumbs, dare_ties, della,
    slerp, arcee_fusion, nuslerp, karcher, multislerp, nearswap, ram, ramplus_tl, sce; `all` for every one),
  - mergekit's same YAML (`mergekit-yaml` from this venv, else from a venv the bench makes in --work),
  - the streaming limit: read the three inputs and write one output of the same size with plain file I/O.
Page cache: the inputs are read right before each measured run (warm-up) and fit in RAM, so every run starts
with them in the page cache (it cannot be dropped without root, and this shared machine evicts some of it). Outputs are written without fsync by every run alike;
before each run the previous output is deleted and `sync` flushes dirty pages, so no run pays for another's
writeback. The streaming limit is measured first and last; the faster is kept (the machine is shared).
Targets (issue 2): both methods >= 2x faster than mergekit; task_arithmetic >= 50% of the streaming limit;
peak RSS <= 25% of one input checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

STREAM_SCRIPT = r"""
import os, sys
inputs, out, size = sys.argv[1].split(os.pathsep), sys.argv[2], int(sys.argv[3])
buf = bytearray(64 * 2**20)
view = memoryview(buf)
written = 0
with open(out, "wb", buffering=0) as dst:
    for path in inputs:
        with open(path, "rb", buffering=0) as src:
            while n := src.readinto(buf):
                if written < size:  # one output of one checkpoint's size
                    written += dst.write(view[: min(n, size - written)])
"""

CONFIGS = {
    "task_arithmetic": "merge_method: task_arithmetic\nbase_model: {base}\nmodels:\n"
    "  - {{model: {a}, parameters: {{weight: 1.0}}}}\n  - {{model: {b}, parameters: {{weight: 0.3}}}}\n",
    "ties": "merge_method: ties\nbase_model: {base}\nmodels:\n"
    "  - {{model: {a}, parameters: {{weight: 1.0, density: 0.5}}}}\n"
    "  - {{model: {b}, parameters: {{weight: 0.3, density: 0.5}}}}\n",
    "breadcrumbs": "merge_method: breadcrumbs\nbase_model: {base}\nmodels:\n"
    "  - {{model: {a}, parameters: {{weight: 1.0, density: 0.5, gamma: 0.01}}}}\n"
    "  - {{model: {b}, parameters: {{weight: 0.3, density: 0.5, gamma: 0.01}}}}\n",
    "dare_ties": "merge_method: dare_ties\nbase_model: {base}\nmodels:\n"
    "  - {{model: {a}, parameters: {{weight: 1.0, density: 0.5}}}}\n"
    "  - {{model: {b}, parameters: {{weight: 0.3, density: 0.5}}}}\n",
    "della": "merge_method: della\nbase_model: {base}\nmodels:\n"
    "  - {{model: {a}, parameters: {{weight: 1.0, density: 0.5, epsilon: 0.1}}}}\n"
    "  - {{model: {b}, parameters: {{weight: 0.3, density: 0.5, epsilon: 0.1}}}}\n",
    "slerp": "merge_method: slerp\nbase_model: {base}\nmodels:\n  - {{model: {a}}}\nparameters: {{t: 0.4}}\n",
    "arcee_fusion": "merge_method: arcee_fusion\nbase_model: {base}\nmodels:\n  - {{model: {a}}}\n",
    "nuslerp": "merge_method: nuslerp\nbase_model: {base}\nmodels:\n"
    "  - {{model: {a}, parameters: {{weight: 0.6}}}}\n  - {{model: {b}, parameters: {{weight: 0.4}}}}\n",
    "karcher": "merge_method: karcher\nmodels:\n  - {{model: {base}}}\n  - {{model: {a}}}\n  - {{model: {b}}}\n",
    "multislerp": "merge_method: multislerp\nbase_model: {base}\nmodels:\n"
    "  - {{model: {a}, parameters: {{weight: 0.6}}}}\n  - {{model: {b}, parameters: {{weight: 0.4}}}}\n",
    "nearswap": "merge_method: nearswap\nbase_model: {base}\nmodels:\n  - {{model: {a}}}\nparameters: {{t: 0.001}}\n",
    "ram": "merge_method: ram\nbase_model: {base}\nmodels:\n  - {{model: {a}}}\n  - {{model: {b}}}\n"
    "parameters: {{epsilon: 0.0005}}\n",
    "ramplus_tl": "merge_method: ramplus_tl\nbase_model: {base}\nmodels:\n  - {{model: {a}}}\n  - {{model: {b}}}\n"
    "parameters: {{epsilon: 0.0005}}\n",
    "sce": "merge_method: sce\nbase_model: {base}\nmodels:\n  - {{model: {a}}}\n  - {{model: {b}}}\n"
    "parameters: {{select_topk: 0.5}}\n",
}
DEFAULT_METHODS = "task_arithmetic,ties"


def measure(cmd: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB, output tail) of one child process, its imports included."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"command failed ({code}): {' '.join(cmd)}\n{out.decode()[-3000:]}")
    return wall, usage.ru_maxrss / 1024, out.decode()[-500:]


def weight_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def find_mergekit(work: Path) -> str:
    local = Path(sys.executable).parent / "mergekit-yaml"
    if local.exists():
        return str(local)
    venv = work / "mergekit-venv"
    exe = venv / "bin" / "mergekit-yaml"
    if not exe.exists():
        print("installing mergekit==0.1.5 into its own venv ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "mergekit==0.1.5"], check=True)
    return str(exe)


BUILD_SCRIPT = """
import json, sys
from engine.synthetic import config_for_size, write_family
work, size = sys.argv[1], float(sys.argv[2])
config = config_for_size(int(size * 1e9))
write_family(work + "/family", config, ("base", "a", "b"), shard_size=int(0.5e9))
print(json.dumps(config))
"""


def build_family(work: Path, size_gb: float) -> dict[str, Path]:
    """Built in a child process: this process must stay small (a child's peak RSS as the kernel reports it
    starts from its parent's size at fork), so it never imports torch."""
    family = {n: work / "family" / n for n in ("base", "a", "b")}
    marker = work / "family.json"
    if marker.exists() and json.loads(marker.read_text()).get("size_gb") == size_gb:
        return family
    shutil.rmtree(work / "family", ignore_errors=True)
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", BUILD_SCRIPT, str(work), str(size_gb)], check=True, capture_output=True, text=True,
        cwd=REPO,
    ).stdout  # fmt: skip
    marker.write_text(json.dumps({"size_gb": size_gb, "config": json.loads(out)}))
    print(f"built the family in {time.perf_counter() - start:.0f}s", flush=True)
    return family


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-gb", type=float, default=1.5, help="size of each input checkpoint (GB)")
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "mergescope-bench"))
    parser.add_argument("--device", default="cpu", help="mergescope's --device (cuda when there is a GPU)")
    parser.add_argument("--skip-mergekit", action="store_true")
    parser.add_argument(
        "--methods",
        default=DEFAULT_METHODS,
        help=f"comma list of {', '.join(CONFIGS)} (default {DEFAULT_METHODS})",
    )
    args = parser.parse_args()
    methods = list(CONFIGS) if args.methods == "all" else [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in CONFIGS]
    if unknown:
        parser.error(f"--methods: unknown {', '.join(unknown)}; choose from {', '.join(CONFIGS)}")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    family = build_family(work, args.size_gb)
    input_bytes = sum(f.stat().st_size for f in weight_files(family["base"]))
    all_inputs = [f for name in ("base", "a", "b") for f in weight_files(family[name])]

    def warm() -> None:
        # Read every input so it is in the page cache; repeated before each run, as the shared machine evicts.
        for f in all_inputs:
            with open(f, "rb", buffering=0) as fh:
                while fh.read(64 * 2**20):
                    pass

    rows: list[tuple[str, float, float]] = []
    out = work / "out"

    def clean() -> None:
        # Remove the last output and flush dirty pages, so no run pays for the previous one's writeback.
        shutil.rmtree(out, ignore_errors=True)
        (work / "stream.out").unlink(missing_ok=True)
        os.sync()
        warm()

    def streaming_limit() -> tuple[float, float]:
        clean()
        wall, rss, _ = measure(
            [sys.executable, "-c", STREAM_SCRIPT, os.pathsep.join(map(str, all_inputs)), str(work / "stream.out"),
             str(input_bytes)]
        )  # fmt: skip
        return wall, rss

    first = streaming_limit()
    mergescope = str(Path(sys.executable).parent / "mergescope")
    mergekit = None if args.skip_mergekit else find_mergekit(work)
    results: dict[str, dict[str, float]] = {}
    for method in methods:
        template = CONFIGS[method]
        yml = work / f"{method}.yml"
        yml.write_text(template.format(**{k: str(v) for k, v in family.items()}))
        clean()
        wall, rss, _ = measure(
            [mergescope, "merge", str(yml), "--out", str(out), "--quiet", "--device", args.device]
        )
        results.setdefault(method, {})["ours"] = wall
        rows.append((f"mergescope {method}", wall, rss))
        if mergekit:
            clean()
            env = dict(os.environ, HF_HUB_OFFLINE="1")
            wall, rss, _ = measure([mergekit, str(yml), str(out), "--quiet", "--no-copy-tokenizer"], env=env)
            results[method]["mergekit"] = wall
            rows.append((f"mergekit {method}", wall, rss))
    last = streaming_limit()
    clean()
    # Measured first and last; the faster is the machine's limit (the other run lost time to other load).
    stream_wall, stream_rss = min(first, last)
    rows.insert(0, ("streaming limit (read 3, write 1)", stream_wall, stream_rss))

    gb = input_bytes / 1e9
    print(f"\ninputs: 3 checkpoints of {gb:.2f} GB (float32, sharded), device {args.device}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; streaming limit runs: "
          f"{first[0]:.2f}s first, {last[0]:.2f}s last (faster kept)")  # fmt: skip
    print(f"{'run':40s} {'wall s':>8s} {'GB/s in':>8s} {'peak RSS MiB':>13s} {'RSS/input':>10s}")
    for label, wall, rss in rows:
        print(f"{label:40s} {wall:8.2f} {3 * gb / wall:8.2f} {rss:13.0f} {rss * 2**20 / input_bytes:10.1%}")
    print()
    for method, r in results.items():
        line = f"{method}: {r['ours']:.2f}s = {stream_wall / r['ours']:.0%} of the streaming limit"
        if "mergekit" in r:
            line += f"; {r['mergekit'] / r['ours']:.2f}x faster than mergekit ({r['mergekit']:.2f}s)"
        print(line)
    print("targets: >= 2x faster than mergekit (both); task_arithmetic >= 50% of the streaming limit; "
          "peak RSS <= 25% of one input")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
