"""A direct swap's CPU work on ATen's OpenMP threads against the crew of pinned single-threaded workers.

    PYTHONPATH=$PWD .venv/bin/python bench/crew_bench.py [--layers 10] [--repeats 3]

For the served shapes of the synthetic 800 MB family (hidden 1024, 10 layers, MLP 3008, vocab 32000; float32
resident θ_pre, θ_G, θ_D; bfloat16 served), in the same run and process:
- bound: writing the served weights once (each float32 tensor copied into a bfloat16 buffer, whole tensors);
- write: the direct swap's fused pass (`engine.backends.served.write_merged`, task arithmetic at ω=0.3) layer by
  layer on this thread with ATen's OpenMP threads, then shared out to the crew (`engine.backends.crew.run`);
- re-pack: vLLM's oneDNN packing of every linear (`create_onednn_mm`), one after another, then on the crew.
The two write paths must give the same bits (checked). Run it with the OpenMP wait policy the engine uses
(`engine/__init__` sets OMP_WAIT_POLICY=PASSIVE before torch loads, as here).
"""

from __future__ import annotations

import argparse
import sys

from cpu_linear_bench import best_of  # bench/ is this script's folder, first on sys.path

import engine  # noqa: F401  - the engine's OpenMP wait policy, before torch loads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", type=int, default=10, help="decoder layers (default 10: the 800 MB family)")
    parser.add_argument("--repeats", type=int, default=3, help="timings per figure; the best is kept")
    args = parser.parse_args(argv)

    import torch

    from engine.backends import crew
    from engine.backends.served import write_merged
    from engine.methods import METHODS

    hidden, mlp, vocab = 1024, 3008, 32000
    shapes = [(vocab, hidden)] + [(3 * hidden, hidden), (hidden, hidden), (2 * mlp, hidden), (hidden, mlp)] * args.layers
    generator = torch.Generator().manual_seed(0)
    inputs = [[torch.randn(s, generator=generator) * 0.02 for _ in range(3)] for s in shapes]
    served = [torch.empty(s, dtype=torch.bfloat16) for s in shapes]
    fn = METHODS["task_arithmetic"].fn
    model_params = [{"weight": 1.0, "density": 1.0}, {"weight": 0.3, "density": 1.0}]

    def combine(base, xs):
        return fn(base, xs, model_params, {"lambda": 1.0, "normalize": False}, None)

    def write_one(index: int) -> None:
        pre, general, skill = inputs[index]
        write_merged(served[index], pre, [general, skill], combine, (torch.float32, torch.bfloat16), f"t{index}")

    largest_first = sorted(range(len(shapes)), key=lambda i: -served[i].numel())
    cpus = crew.engine_cpus()
    size = crew.crew_size(cpus)
    numel = sum(t.numel() for t in served)
    print(
        f"{len(shapes)} tensors, {numel / 1e6:.0f}M elements ({numel * 4 / 1e9:.2f} GB float32 each input); "
        f"ATen threads {torch.get_num_threads()}, crew of {size} on CPUs {cpus}; best of {args.repeats}"
    )
    bound = best_of(lambda: [out.copy_(x[1]) for out, x in zip(served, inputs, strict=True)], args.repeats)
    aten = best_of(lambda: [write_one(i) for i in largest_first], args.repeats)
    expected = [t.clone() for t in served]
    on_crew = best_of(lambda: crew.run(lambda _w, i: write_one(i), largest_first, cpus), args.repeats)
    same = all(torch.equal(a.view(torch.int16), b.view(torch.int16)) for a, b in zip(served, expected, strict=True))
    print(f"bound (write the served weights once): {bound:.3f} s")
    print(f"fused write, ATen threads:  {aten:.3f} s ({aten / bound:.1f}x the bound)")
    print(f"fused write, crew:          {on_crew:.3f} s ({on_crew / bound:.1f}x the bound); same bits: {same}")
    try:
        from vllm import _custom_ops as ops
    except Exception as exc:  # noqa: BLE001 - the re-pack figures need vLLM
        print(f"vllm does not import here ({exc}); no re-pack figures")
        return 0 if same else 1
    if not ops._supports_onednn:
        print("this vLLM build has no oneDNN linear; no re-pack figures")
        return 0 if same else 1
    linears = [served[i] for i in largest_first]

    def pack_one(weight: torch.Tensor) -> None:
        ops.create_onednn_mm(weight.t(), 32)

    serial = best_of(lambda: [pack_one(w) for w in linears], args.repeats)
    packed_on_crew = best_of(lambda: crew.run(lambda _w, w: pack_one(w), linears, cpus), args.repeats)
    print(f"re-pack, one after another: {serial:.3f} s ({serial / bound:.1f}x the bound)")
    print(f"re-pack, crew:              {packed_on_crew:.3f} s ({packed_on_crew / bound:.1f}x the bound)")
    print(
        f"swap work (write + re-pack): ATen {aten + serial:.3f} s, crew {on_crew + packed_on_crew:.3f} s "
        f"({(aten + serial) / (on_crew + packed_on_crew):.2f}x faster), against the bound "
        f"{(on_crew + packed_on_crew) / bound:.1f}x"
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
