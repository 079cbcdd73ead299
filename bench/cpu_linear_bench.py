"""What keeping vLLM's packed CPU linears costs a swap, and what dropping them would cost generation.

    PYTHONPATH=$PWD .venv/bin/python bench/cpu_linear_bench.py [--dtype float32,bfloat16] [--repeats 5]

On a CPU vLLM serves every linear layer from a oneDNN-packed copy of its weight (`dispatch_cpu_unquantized_gemm`,
`create_onednn_mm`) and drops the plain weight, so a direct swap re-creates that packed copy per layer. For the
served shapes of the synthetic --sizes family (hidden 1024, intermediate 2816, vocab 32000), in the same run:
- write: copying the weight once (the bandwidth bound `bench/sweep_bench.py` measures, per layer);
- re-pack: `create_onednn_mm` on the written weight (what a direct swap pays per packed layer);
- generation: the packed oneDNN matmul against `torch.nn.functional.linear` on the plain weight (vLLM's fallback
  when packing is skipped), at decode-sized and prefill-sized batches, and whether the two give the same bits
  (a swapped engine must answer exactly like a fresh one, which packs).
"""

from __future__ import annotations

import argparse
import sys
import time

SHAPES = {
    "qkv_proj": (3072, 1024),
    "o_proj": (1024, 1024),
    "gate_up_proj": (5632, 1024),
    "down_proj": (1024, 2816),
    "lm_head": (32000, 1024),
}
BATCHES = (1, 16, 256)


def best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="float32,bfloat16", help="comma list (default float32,bfloat16)")
    parser.add_argument("--repeats", type=int, default=5, help="timings per figure; the best is kept")
    args = parser.parse_args(argv)

    import torch

    try:
        from vllm import _custom_ops as ops
    except Exception as exc:
        print(f"vllm does not import here ({exc}); nothing to measure")
        return 0
    if not ops._supports_onednn:
        print("this vLLM build has no oneDNN linear; nothing to measure")
        return 0
    torch.manual_seed(0)
    print(f"torch threads {torch.get_num_threads()}; best of {args.repeats}")
    header = f"{'dtype':<9} {'layer':<13} {'write':>8} {'re-pack':>8} " + " ".join(
        f"{'M=' + str(m) + ' packed/plain':>24}" for m in BATCHES
    )
    print(header + "  same bits")
    for name in args.dtype.split(","):
        dtype = getattr(torch, name)
        totals = {"write": 0.0, "pack": 0.0}
        for layer, (n, k) in SHAPES.items():
            weight = torch.randn(n, k).to(dtype)
            out = torch.empty_like(weight)
            write = best_of(lambda w=weight, o=out: o.copy_(w), args.repeats)
            holder = {}
            pack = best_of(lambda w=weight, h=holder: h.update(mm=ops.create_onednn_mm(w.t(), 32)), args.repeats)
            totals["write"] += write
            totals["pack"] += pack
            cells, same = [], True
            for m in BATCHES:
                x = torch.randn(m, k).to(dtype)
                packed = best_of(lambda x=x, h=holder: ops.onednn_mm(h["mm"], x, None), args.repeats)
                plain = best_of(lambda x=x, w=weight: torch.nn.functional.linear(x, w), args.repeats)
                same = same and torch.equal(ops.onednn_mm(holder["mm"], x, None), torch.nn.functional.linear(x, weight))
                cells.append(f"{packed * 1e3:>9.3f} / {plain * 1e3:>8.3f} ms")
            print(
                f"{name:<9} {layer:<13} {write * 1e3:>6.2f}ms {pack * 1e3:>6.2f}ms "
                + " ".join(f"{c:>24}" for c in cells)
                + f"  {'yes' if same else 'no'}"
            )
        print(
            f"{name:<9} {'all five':<13} {totals['write'] * 1e3:>6.2f}ms {totals['pack'] * 1e3:>6.2f}ms  "
            f"(re-pack = {totals['pack'] / totals['write']:.1f}x the write)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
