"""mergescope engine: checkpoints, merge methods, streaming merge + export, serving backends, sweeps, store."""
