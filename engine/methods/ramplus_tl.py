"""ramplus_tl — RAM with each model's unique deltas scaled by its shared/unique ratio (see `ram`)."""

from engine.methods.ram import RAMPLUS_TL as METHOD

__all__ = ["METHOD"]
