"""della_linear — DELLA's MagPrune drop, summed without sign election."""

from engine.methods._task_vectors import keep_ranked, task_vector_method

METHOD = task_vector_method(
    "della_linear",
    sparsifier=keep_ranked,
    consensus=False,
    normalize=False,
    rescale=True,
    extra_model_params={"epsilon": 0.15},
)
