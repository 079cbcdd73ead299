"""A crew of CPU threads for memory-bound passes inside an engine process: one Python thread per CPU the engine's
OpenMP threads are bound to, each pinned to its CPU and running ATen single-threaded.

Why not ATen's own intra-op threads: with the passive OpenMP wait policy (engine/__init__), every parallel region
wakes sleeping threads, about 0.1 ms each on a VM; a chunked pass over a model's weights is thousands of small
regions. Measured on a 2-core CPU, 200M float32 elements x 3 inputs merged into bfloat16 in 1M-element chunks:
0.24 s with two OpenMP threads, 0.11 s with two such Python threads (the kernels release the GIL), the latter at
memory bandwidth. vLLM's one-layer-at-a-time oneDNN re-pack runs serially: two threads re-packing different layers
take 0.13 s where one takes 0.19 s.

Threads are started per `run` (a swap is hundreds of milliseconds; starting two threads is well under one) and
pinned: the engine's main thread is bound to its first CPU, and a thread it starts inherits that one CPU.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import torch

Item = TypeVar("Item")


def _cpu_list(text: str) -> list[int]:
    """'0 1 2', '0,1,2', '0-3', '0-7:2' (libgomp and OpenMP place syntax) -> CPU numbers in order."""
    cpus: list[int] = []
    for part in re.split(r"[\s,]+", text.strip()):
        match = re.fullmatch(r"(\d+)(?:-(\d+)(?::(\d+))?)?", part)
        if match is None:
            continue
        first, last, stride = match.group(1), match.group(2), match.group(3)
        end = int(last) if last is not None else int(first)
        cpus.extend(range(int(first), end + 1, int(stride or 1)))
    return list(dict.fromkeys(cpus))


def engine_cpus(environ: dict[str, str] | None = None) -> list[int]:
    """The CPUs this process's OpenMP threads are bound to, in thread order: from the variables vLLM sets when it
    binds an engine's threads (GOMP_CPU_AFFINITY for libgomp, KMP_AFFINITY's proclist for Intel's OpenMP,
    OMP_PLACES otherwise); without them, the CPUs this thread may run on."""
    env = os.environ if environ is None else environ
    gomp = env.get("GOMP_CPU_AFFINITY", "")
    kmp = re.search(r"proclist=\[([^\]]*)\]", env.get("KMP_AFFINITY", ""))
    places = env.get("OMP_PLACES", "").replace("{", " ").replace("}", " ")
    for text in (gomp, kmp.group(1) if kmp else "", places):
        cpus = _cpu_list(text)
        if cpus:
            return cpus
    return (
        sorted(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else list(range(os.cpu_count() or 1))
    )


def crew_size(cpus: Sequence[int] | None = None) -> int:
    """Threads a crew should have: one per CPU the engine's threads use, no more than ATen's thread count."""
    cpus = engine_cpus() if cpus is None else cpus
    return max(1, min(len(cpus), torch.get_num_threads()))


def run(work: Callable[[int, Item], None], items: Iterable[Item], cpus: Sequence[int] | None = None) -> None:
    """`work(worker_index, item)` for every item, on a crew of pinned single-threaded workers; each worker takes the
    next item as it gets free (give the largest first). Every item is attempted; the first exception is raised
    after all workers stopped. With one CPU, runs inline on this thread."""
    cpus = list(engine_cpus() if cpus is None else cpus)
    size = crew_size(cpus)
    todo: queue.SimpleQueue[Item] = queue.SimpleQueue()
    for item in items:
        todo.put(item)
    if size == 1:
        while not todo.empty():
            work(0, todo.get())
        return
    threads_before = torch.get_num_threads()
    errors: list[BaseException] = []
    started = threading.Barrier(size + 1)

    def worker(index: int) -> None:
        try:
            # 0: this thread. A CPU outside this process's allowed set: run wherever the scheduler puts it.
            with contextlib.suppress(OSError, AttributeError):
                os.sched_setaffinity(0, {cpus[index % len(cpus)]})
            # ATen sets a new thread's count at its first use, from the process-wide count: use it first, then set
            # this thread's own (not torch.set_num_threads: vLLM's CPU worker replaces that with a no-op).
            torch.get_num_threads()
            torch._C.set_num_threads(1)
        except BaseException as exc:  # noqa: BLE001 - re-raised on the calling thread; the others do the work
            errors.append(exc)
            return
        finally:
            started.wait()  # always: the calling thread waits for every worker to be set up
        while True:
            try:
                item = todo.get_nowait()
            except queue.Empty:
                return
            try:
                work(index, item)
            except BaseException as exc:  # noqa: BLE001 - re-raised on the calling thread
                errors.append(exc)

    threads = [
        threading.Thread(target=worker, args=(i,), name=f"mergescope-crew-{i}", daemon=True)
        for i in range(size)
    ]
    for thread in threads:
        thread.start()
    started.wait()
    # Setting one thread's count also set the count new threads start with; give that back at once.
    torch._C.set_num_threads(threads_before)
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
