"""dare_linear — DARE: drop deltas at random with probability 1 − density, rescale, add (Yu et al. 2023)."""

from engine.methods._task_vectors import keep_random, task_vector_method

METHOD = task_vector_method(
    "dare_linear",
    sparsifier=keep_random,
    consensus=False,
    normalize=False,
    rescale=True,
)
