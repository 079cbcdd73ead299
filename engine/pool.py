"""A pool of serving engines as Ray actors: a sweep's points spread over N engines, results back at the driver.

Each actor holds one backend (`make_backend` in its own process: vLLM or transformers, with the same options as a
single engine) and answers `generate(variant, prompts, settings)` exactly as that backend does. Ray schedules the
actors (one per GPU where GPUs exist, else a share of the CPU cores each) and `ray.util.ActorPool` hands the next
job to whichever engine is idle; the driver keeps the one results store, so keys, resumption and results are those
of a one-engine sweep. On a cluster (`address`), every node must see the checkpoints and suites under the same
paths (a shared filesystem).

The pool has the backend's interface (`generate`, `generate_all`, `describe`, `close`, `dtype`), so the sweep
runner and a dashboard use it like one engine; `generate` goes to any idle engine.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import BackendError

if TYPE_CHECKING:
    from engine.backends.base import GenerationSettings, Messages, SettingsArg
    from engine.config import MergeConfig

# Environment the engine processes need from the driver on a local cluster (where the code lives, vLLM's knobs).
_FORWARDED_ENV = (
    "PYTHONPATH",
    "VLLM_CPU_KVCACHE_SPACE",
    "VLLM_LOGGING_LEVEL",
    "VLLM_LOGGING_STREAM",
    "HF_HUB_OFFLINE",
)


class _Engine:
    """The Ray actor: one backend in its own process."""

    def __init__(self, start_model: str, options: dict[str, Any]) -> None:
        from engine.backends import make_backend

        self.backend = make_backend(start_model, **options)

    def describe(self) -> dict[str, Any]:
        return self.backend.describe()

    def generate(
        self, variant: Any, prompts: list, settings: Any
    ) -> tuple[list[str], dict[str, float], dict]:
        replies = self.backend.generate(variant, prompts, settings)
        return replies, dict(self.backend.last_timings), self.backend.describe()

    def close(self) -> None:
        self.backend.close()


def _init_ray(ray: Any, init: dict[str, Any]) -> threading.Event | None:
    """`ray.init(**init)`, from a thread that lives until the returned event is set (None: on the main thread).

    Ray ties the head processes it starts (GCS, raylet) to the *thread* that started them (Linux's
    PR_SET_PDEATHSIG is per thread): a pool started from a short-lived thread — the dashboard's warm-up, one of
    Gradio's worker threads — would lose its cluster, and the process with it, when that thread ends."""
    if threading.current_thread() is threading.main_thread():
        ray.init(**init)
        return None
    started, release = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    def host() -> None:
        try:
            ray.init(**init)
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)
        finally:
            started.set()
        release.wait()

    threading.Thread(target=host, name="mergescope-ray-host", daemon=True).start()
    started.wait()
    if failure:
        release.set()
        raise failure[0]
    return release


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise BackendError(
            "--workers / --ray-address need Ray: pip install 'mergescope[ray]' (ray 2.60)"
        ) from exc
    return ray


class EnginePool:
    """N engines as Ray actors on `start_model`. `options` are `make_backend`'s keyword arguments."""

    kind = "pool"

    def __init__(
        self, start_model: str | Path, workers: int, options: dict[str, Any], *, address: str | None = None
    ) -> None:
        if workers < 1:
            raise BackendError(f"--workers must be >= 1, got {workers}")
        ray = _ray()
        self.start_model = Path(start_model)
        self.options = dict(options)
        self.last_timings: dict[str, float] = {"swap_s": 0.0, "generate_s": 0.0}
        self._started_ray = False
        self._ray_host: threading.Event | None = None
        if not ray.is_initialized():
            init: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
            if address:
                init["address"] = address
            else:
                # A local cluster: the engine processes must import this checkout and see vLLM's settings.
                env = {k: os.environ[k] for k in _FORWARDED_ENV if k in os.environ}
                init["runtime_env"] = {"env_vars": env}
                init["object_store_memory"] = 256 * 2**20  # replies are small; keep /dev/shm use small
            self._ray_host = _init_ray(ray, init)
            self._started_ray = True
        gpus = ray.cluster_resources().get("GPU", 0)
        cpus = ray.cluster_resources().get("CPU", 1)
        tp = int(options.get("tensor_parallel_size", 1)) * int(options.get("pipeline_parallel_size", 1))
        if gpus >= workers * tp:
            # vLLM places its own ranks; the actor reserves the GPUs they use.
            resources = {"num_gpus": tp, "num_cpus": 1}
        else:
            resources = {"num_gpus": 0, "num_cpus": max(cpus / workers, 0.01)}
        actor = ray.remote(**resources)(_Engine)
        self._actors = [actor.remote(str(self.start_model), self.options) for _ in range(workers)]
        try:
            # Wait for every engine: a start failure surfaces here, before any point is handed out.
            self._info = ray.get([a.describe.remote() for a in self._actors])
        except Exception as exc:
            self.close()
            raise BackendError(f"an engine of the pool did not start on {self.start_model}: {exc}") from exc
        dtypes = sorted({info["dtype"] for info in self._info})
        if len(dtypes) != 1:
            self.close()
            raise BackendError(f"the pool's engines serve different dtypes {dtypes}; pass --dtype")
        self.dtype = dtypes[0]
        self.backend_kind = self._info[0]["backend"]

    @property
    def workers(self) -> int:
        return len(self._actors)

    @property
    def swap_path(self) -> str | None:
        paths = sorted({i["swap_path"] for i in self._info if i["swap_path"]})
        return None if not paths else paths[0] if len(paths) == 1 else "mixed"

    @property
    def swap_reason(self) -> str:
        return next((i["swap_reason"] for i in self._info if i["swap_path"]), "no merge swapped yet")

    def describe(self) -> dict[str, Any]:
        return {
            **self._info[0],
            "backend": f"{self.backend_kind} x{self.workers} (Ray)",
            "swap_path": self.swap_path,
            "swap_reason": self.swap_reason,
            "workers": self.workers,
        }

    def generate_all(self, jobs: list[tuple[Any, list, Any]]) -> Iterator[tuple[list[str], dict[str, float]]]:
        """(replies, timings) per job, in job order, the jobs spread over the idle engines by Ray's ActorPool."""
        from ray.util import ActorPool

        pool = ActorPool(list(self._actors))
        # ActorPool.map keeps one job in flight per engine and yields in submission order.
        for replies, timings, info in pool.map(lambda a, job: a.generate.remote(*job), list(jobs)):
            if info["swap_path"]:
                self._info[0] = info
            self.last_timings = timings
            yield replies, timings

    def generate(
        self, variant: MergeConfig | None, prompts: list[Messages], settings: SettingsArg
    ) -> list[str]:
        replies, _timings = next(self.generate_all([(variant, prompts, settings)]))
        return replies

    def stream(
        self, variant: MergeConfig | None, messages: Messages, settings: GenerationSettings
    ) -> Iterator[str]:
        """The whole reply at once (an actor's generator does not stream through this interface)."""
        yield self.generate(variant, [messages], settings)[0]

    def close(self) -> None:
        ray = _ray()
        for actor in getattr(self, "_actors", []):
            with contextlib.suppress(Exception):  # a dead engine has nothing to release
                ray.get(actor.close.remote(), timeout=60)
            ray.kill(actor)
        self._actors = []
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
        self._started_ray = False
        if getattr(self, "_ray_host", None) is not None:
            self._ray_host.set()  # the cluster is down: its host thread may end
            self._ray_host = None

    def __enter__(self) -> EnginePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
