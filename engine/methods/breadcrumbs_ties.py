"""breadcrumbs_ties — Breadcrumbs trim + TIES sign election."""

from engine.methods._task_vectors import keep_middle, task_vector_method

METHOD = task_vector_method(
    "breadcrumbs_ties",
    sparsifier=keep_middle,
    consensus=True,
    normalize=False,
    rescale=False,
    extra_model_params={"gamma": 0.01},
)
