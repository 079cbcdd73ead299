"""The CPU crew (`engine.backends.crew`): which CPUs an engine's threads are bound to, and running work on pinned
single-threaded workers. The crew inside a real engine is exercised in test_resident_swap.py."""

from __future__ import annotations

import os
import threading

import pytest
import torch

from engine.backends import crew


def test_cpu_lists_in_the_openmp_syntaxes():
    assert crew._cpu_list("0 1 2") == [0, 1, 2]
    assert crew._cpu_list("4,2-3") == [4, 2, 3]
    assert crew._cpu_list("0-7:2") == [0, 2, 4, 6]
    assert crew._cpu_list("") == []


def test_engine_cpus_follow_the_binding_vllm_set():
    assert crew.engine_cpus({"GOMP_CPU_AFFINITY": "2 3"}) == [2, 3]
    assert crew.engine_cpus({"KMP_AFFINITY": "granularity=fine,explicit,proclist=[5,6,7]"}) == [5, 6, 7]
    assert crew.engine_cpus({"OMP_PLACES": "{0,1}", "OMP_PROC_BIND": "true"}) == [0, 1]
    # No binding: the CPUs this thread may run on.
    assert crew.engine_cpus({}) == sorted(os.sched_getaffinity(0))


def test_run_does_every_item_on_single_threaded_workers():
    cpus = sorted(os.sched_getaffinity(0))
    before = torch.get_num_threads()
    seen: dict[int, tuple[int, int]] = {}
    done: list[int] = []
    lock = threading.Lock()

    def work(worker: int, item: int) -> None:
        with lock:
            seen[threading.get_ident()] = (worker, torch.get_num_threads())
            done.append(item)

    crew.run(work, range(50), cpus)
    assert sorted(done) == list(range(50))
    assert torch.get_num_threads() == before  # the caller's own thread count is untouched
    if crew.crew_size(cpus) > 1:
        assert all(count == 1 for _, count in seen.values())
        assert {worker for worker, _ in seen.values()} <= set(range(crew.crew_size(cpus)))
        assert threading.get_ident() not in seen
    else:
        assert list(seen) == [threading.get_ident()]  # one CPU: inline


def test_run_attempts_everything_then_raises_the_first_error():
    done: list[int] = []

    def work(worker: int, item: int) -> None:
        if item == 3:
            raise ValueError("item 3 failed")
        done.append(item)

    with pytest.raises(ValueError, match="item 3"):
        crew.run(work, range(8), sorted(os.sched_getaffinity(0)))
    assert sorted(done) == [0, 1, 2, 4, 5, 6, 7]
