"""ties — TIES: keep the top-density deltas by magnitude, elect a sign per entry, average the agreeing ones (Yadav et al. 2023)."""

from engine.methods._task_vectors import keep_largest, task_vector_method

METHOD = task_vector_method(
    "ties",
    sparsifier=keep_largest,
    consensus=True,
    normalize=True,
    rescale=False,
)
