"""A sweep over a pool of engines (Ray actors) gives the very results of a one-engine sweep, under the same store
keys, and resumes from the store like one. Slow: it starts a local Ray cluster and two engines."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.backends import make_backend
from engine.store import ResultStore
from engine.sweep import SweepSpec, prepare_sweep, run_sweep

ray = pytest.importorskip("ray", reason="the Ray extra is not installed")


def _small_suite(family, tmp: Path, items: int = 12) -> str:
    """The demo family's general suite cut to its first items (same scorer and settings)."""
    source = next(Path(p) for p in family.suites if Path(p).name == "demo-general")
    target = tmp / "demo-general-small"
    target.mkdir()
    (target / "suite.yaml").write_text((source / "suite.yaml").read_text())
    lines = (source / "items.jsonl").read_text().splitlines()[:items]
    (target / "items.jsonl").write_text("\n".join(lines) + "\n")
    return str(target)


def _rows(store: ResultStore, prepared) -> dict[str, dict]:
    """Each point of the stored sweep: its scores and, per suite, the stored payload (score,
    per-item outcomes, replies)."""
    points = store.sweep_points(store.begin_sweep(prepared.store_spec()))
    return {
        p["label"]: {
            "scores": p["scores"],
            "suites": {name: r["payload"] for name, r in p["suites"].items()},
        }
        for p in points
    }


@pytest.mark.slow
def test_two_ray_workers_match_one_engine(demo_family, tmp_path):
    from engine.pool import EnginePool

    skill = next(iter(demo_family.skills))
    spec = SweepSpec(
        base=str(demo_family.base),
        general=str(demo_family.general),
        skills={skill: str(demo_family.skills[skill])},
        weights=[0.0, 0.5, 1.0],
        suites=[_small_suite(demo_family, tmp_path)],
        heuristic_point=False,
    )
    prepared = prepare_sweep(spec)
    one = make_backend(demo_family.general, kind="transformers")
    try:
        with ResultStore(tmp_path / "one.db") as store:
            single = list(run_sweep(prepared, one, store))
            single_rows = _rows(store, prepared)
    finally:
        one.close()
    options = {"kind": "transformers", "dtype": one.dtype}
    with EnginePool(demo_family.general, 2, options) as pool, ResultStore(tmp_path / "pool.db") as store:
        assert pool.workers == 2 and pool.dtype == one.dtype
        pooled = list(run_sweep(prepared, pool, store))
        assert not any(r.cached for r in pooled)
        pool_rows = _rows(store, prepared)
        again = list(run_sweep(prepared, pool, store))  # resumable: every result is in the store
        assert all(r.cached for r in again)
        assert pool.describe()["swap_path"] in ("resident", "streaming")
    assert [r.label for r in pooled] == [r.label for r in single]
    for a, b in zip(single, pooled, strict=True):
        assert a.key == b.key
        assert [s.replies for s in a.suite_results] == [s.replies for s in b.suite_results], a.label
    assert set(pool_rows) == set(single_rows)
    for label, row in single_rows.items():
        assert pool_rows[label] == row, label  # same stored scores, per-item outcomes and replies


@pytest.mark.slow
def test_a_pool_started_from_a_thread_outlives_that_thread(demo_family):
    """The dashboard starts its sweep pool from a warm-up thread that then ends; Ray ties its head processes to the
    starting thread, so the pool must keep its cluster after that thread is gone."""
    import threading

    from engine.backends.base import GenerationSettings
    from engine.pool import EnginePool

    pools: list[EnginePool] = []
    starter = threading.Thread(
        target=lambda: pools.append(EnginePool(demo_family.general, 1, {"kind": "transformers"}))
    )
    starter.start()
    starter.join()
    assert len(pools) == 1, "the pool did not start"
    with pools[0] as pool:
        prompt = [{"role": "user", "content": "What is 2 + 3?"}]
        replies = pool.generate(None, [prompt, prompt], GenerationSettings(max_tokens=8))
        assert len(replies) == 2 and replies[0] == replies[1]
        assert ray.is_initialized()
    assert not ray.is_initialized()
