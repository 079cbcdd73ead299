"""What a sweep variant's `tokenizer_source: <general>` costs per merge setup (each swap runs one): the
shared-vocabulary check against the baseline without a tokenizer setting, measured in the same run on the demo
family, and the full alignment path (two differing synthetic vocabularies, union) for scale.

    python bench/tokenizer_overhead.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from engine.config import load_config, ptm_config
from engine.demo import load_family
from engine.merge import prepare_merge
from engine.synthetic import llama_config, write_family_member


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    family = load_family()
    variant = ptm_config(family.base, family.general, {family.skills["safety"]: 0.3})
    baseline = dataclasses.replace(variant, tokenizer_source=None)
    base_ms = best(lambda: prepare_merge(baseline), args.repeat)
    tok_ms = best(lambda: prepare_merge(variant), args.repeat)
    print(f"demo variant, no tokenizer setting (baseline): {base_ms:8.1f} ms")
    print(f"demo variant, tokenizer_source: general      : {tok_ms:8.1f} ms  (+{tok_ms - base_ms:.1f} ms)")
    with tempfile.TemporaryDirectory() as tmp:
        a = write_family_member(Path(tmp) / "a", llama_config(vocab_size=99), variant=1)
        b = write_family_member(Path(tmp) / "b", llama_config(vocab_size=92), extra_tokens=("<x>", "<y>"))
        union = load_config(
            f"merge_method: linear\nmodels:\n  - {{model: {a}, parameters: {{weight: 1}}}}\n"
            f"  - {{model: {b}, parameters: {{weight: 1}}}}\ntokenizer_source: union\n"
        )
        print(f"union of two differing vocabularies          : {best(lambda: prepare_merge(union), args.repeat):8.1f} ms")


if __name__ == "__main__":
    main()
