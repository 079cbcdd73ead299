"""della — DELLA: magnitude-ranked random drop (MagPrune) + TIES sign election (Deep et al. 2024)."""

from engine.methods._task_vectors import keep_ranked, task_vector_method

METHOD = task_vector_method(
    "della",
    sparsifier=keep_ranked,
    consensus=True,
    normalize=True,
    rescale=True,
    extra_model_params={"epsilon": 0.15},
)
