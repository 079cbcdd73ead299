"""Test helper for the dashboard tests (not collected): a prompt on which two sweep points are known to differ."""

from __future__ import annotations

from pathlib import Path


def telling_prompt(store_path: Path, family, a: str, b: str) -> str:
    """A safety probe on which the sweep just stored different (greedy) replies for points `a` and `b`, so their
    chat replies must differ too; the first harmful probe where the store has none."""
    from engine.store import ResultStore
    from evals import load_suites
    from ui.app import probe_prompts

    prompts = {}
    for suite in load_suites([str(p) for p in family.suites]):
        for item in suite.items:
            prompts[item.id] = [m["content"] for m in item.messages if m["role"] == "user"][-1]
    with ResultStore(store_path) as store:
        points = {p["label"]: p for p in store.sweep_points(store.resolve_sweep(None))}
    for suite, stored in points[a]["suites"].items():
        mine, theirs = stored["payload"], points[b]["suites"][suite]["payload"]
        if mine["aggregate"].startswith("safety"):
            for item_id, x, y in zip(mine["item_ids"], mine["replies"], theirs["replies"], strict=True):
                if x.strip() != y.strip():
                    return prompts[item_id]
    return probe_prompts([str(p) for p in family.suites])["harmful"][0]
