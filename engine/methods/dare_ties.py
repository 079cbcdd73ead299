"""dare_ties — DARE drop + TIES sign election."""

from engine.methods._task_vectors import keep_random, task_vector_method

METHOD = task_vector_method(
    "dare_ties",
    sparsifier=keep_random,
    consensus=True,
    normalize=False,
    rescale=True,
)
