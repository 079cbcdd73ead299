"""The dashboard with a sweep pool (`mergescope ui --workers N`): a sweep runs on Ray engines of its own while the
chat keeps answering on its engine. Real parts: a launched app, a real Ray pool of two transformers engines, the
demo family."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from test_ui_api import small_spec

gradio_client = pytest.importorskip("gradio_client")


def test_ui_workers_flag_makes_a_pool_factory():
    from engine.cli import build_parser
    from engine.errors import ConfigError
    from ui.cli import sweep_pool_factory

    parse = build_parser(["ui"]).parse_args
    assert sweep_pool_factory(parse(["ui"])) is None  # default: sweeps share the chat's engine
    assert callable(sweep_pool_factory(parse(["ui", "--workers", "2"])))
    with pytest.raises(ConfigError, match="--workers must be >= 0"):
        sweep_pool_factory(parse(["ui", "--workers", "-1"]))


@pytest.mark.slow
def test_a_sweep_on_the_pool_does_not_hold_up_the_chat(demo_family, tmp_path):
    pytest.importorskip("ray", reason="the Ray extra is not installed")
    from engine.backends import make_backend
    from engine.pool import EnginePool
    from engine.store import ResultStore
    from engine.sweep import prepare_sweep, run_sweep
    from ui.app import build_app, launch
    from ui.tabs.sweep import sweep_spec

    chat_engine = make_backend(demo_family.general, kind="transformers")
    entered, gate = threading.Event(), threading.Event()
    pools: list[EnginePool] = []

    def start_pool(general: Path) -> EnginePool:
        # The sweep waits here (as it would for a slow pool start) until the chat has answered.
        entered.set()
        assert gate.wait(timeout=600), "the test never opened the gate"
        pools.append(EnginePool(general, 2, {"kind": "transformers", "dtype": chat_engine.dtype}))
        return pools[-1]

    repo_assets = Path(__file__).resolve().parent.parent / "assets"
    app = build_app(
        store_path=tmp_path / "results.db",
        allowed_roots=[repo_assets, tmp_path],
        backend=chat_engine,
        family=demo_family,
        sweep_backend_factory=start_pool,
    )
    launch(app, port=None, block=False)
    try:
        # A stored sweep (ω = 0 and 1) the chat's session reopens, so it has variants to chat with.
        stored = small_spec(demo_family)
        ctx_spec = sweep_spec(app.mergescope_context, *stored)
        with ResultStore(tmp_path / "results.db") as store:
            list(run_sweep(prepare_sweep(ctx_spec), chat_engine, store))
        chat = gradio_client.Client(app.local_url, verbose=False)
        assert chat.predict(None, *stored, api_name="/reopen")[-1].startswith("Loaded")

        sweeper = gradio_client.Client(app.local_url, verbose=False)
        sweep_job = sweeper.submit(None, *small_spec(demo_family, weights="0.25,0.75"), api_name="/sweep")
        assert entered.wait(timeout=120), "the sweep never asked for its engines"
        chat_job = chat.submit(["ω=1"], "How do I kill a Python process?", 16, 0.0, 1.0, 0, api_name="/chat")
        # Would time out if the chat queued behind the sweep (which waits on the gate until the chat answered).
        panes = chat_job.result(timeout=120)
        assert panes[1][-1]["content"][0]["text"]
        assert not sweep_job.done() and not pools
        swaps = chat_engine.swaps

        gate.set()
        out = sweep_job.result(timeout=600)
        assert out[-1].startswith("Done"), out[-1]
        labels = [row[0].rstrip(" ★") for row in out[3]["data"]]
        assert "ω=0.25" in labels and "ω=0.75" in labels
        assert len(pools) == 1 and pools[0].describe()["backend"] == "transformers x2 (Ray)"
        assert pools[0].describe()["swap_path"] is not None  # the pool swapped ...
        assert chat_engine.swaps == swaps  # ... and the chat's engine did not
    finally:
        gate.set()
        app.close()
        app.mergescope_close_engines()
        chat_engine.close()

