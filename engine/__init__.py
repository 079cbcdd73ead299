"""mergescope engine: checkpoints, merge methods, streaming merge + export, serving backends, sweeps, store."""

import os

# OpenMP threads that spin at every barrier (libgomp's default wait policy) stall when the cores are shared: one
# descheduled thread holds up each parallel region, and a tiny model's decode step is thousands of them. Measured
# on a 2-core CPU at load ~9: the demo sweep on the transformers backend took 188-218 s spinning and 24-31 s
# passive; vLLM's generation 12.8 s and 10.0 s. OpenMP reads this when torch loads it, so it is set before any
# engine module imports torch, and inherited by engine processes (vLLM's, Ray's); the user's own value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
