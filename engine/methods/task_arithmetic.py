"""task_arithmetic — task arithmetic: base + λ·Σ w_i (θ_i − base) (Ilharco et al. 2023)."""

from engine.methods._task_vectors import task_vector_method

METHOD = task_vector_method(
    "task_arithmetic",
    sparsifier=None,
    consensus=False,
    normalize=False,
    rescale=False,
)
