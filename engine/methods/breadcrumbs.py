r"""breadcrumbs — Model Breadcrumbs: trim the largest (gamma) and smallest deltas, keep density (Davari \& Belilovsky 2023)."""

from engine.methods._task_vectors import keep_middle, task_vector_method

METHOD = task_vector_method(
    "breadcrumbs",
    sparsifier=keep_middle,
    consensus=False,
    normalize=False,
    rescale=False,
    extra_model_params={"gamma": 0.01},
)
