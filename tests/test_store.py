"""The SQLite results store: keys, round trips, durability across connections, exports."""

from __future__ import annotations

import csv
import json
import sqlite3

import pytest

from engine.errors import StoreError
from engine.store import ResultStore, points_to_csv, result_key, stable_hash


def test_stable_hash_ignores_dict_order_and_sees_values():
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})
    assert stable_hash({"w": 0.3}) != stable_hash({"w": 0.30000001})


def test_result_key_depends_on_every_part():
    variant = {"config": {"merge_method": "task_arithmetic", "models": ["checkpoint:abc"]}}
    settings = {"max_tokens": 8, "temperature": 0.0, "top_p": 1.0, "seed": 0}
    key = result_key(variant, "suite@1:xyz", settings)
    assert key == result_key(dict(variant), "suite@1:xyz", dict(settings))
    assert key != result_key(variant, "suite@2:xyz", settings)
    assert key != result_key(variant, "suite@1:xyz", {**settings, "max_tokens": 9})
    assert key != result_key(
        {"config": {"merge_method": "ties", "models": ["checkpoint:abc"]}}, "suite@1:xyz", settings
    )


def test_results_round_trip_and_survive_reopening(tmp_path):
    path = tmp_path / "r.db"
    payload = {
        "score": {"value": 0.5, "n": 2, "lo": 0.1, "hi": 0.9},
        "replies": ["ja", "nein ü"],
        "per_item": [1, 0],
    }
    with ResultStore(path) as store:
        assert store.get("k1") is None
        store.put("k1", variant="v1", suite="s@1", payload=payload, timings={"generate_s": 1.5})
        assert store.count_results() == 1
        # Another connection sees it at once: each put is committed before it returns.
        other = sqlite3.connect(path)
        assert other.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 1
        other.close()
    with ResultStore(path) as store:
        stored = store.get("k1")
    assert stored == {"payload": payload, "timings": {"generate_s": 1.5}}


def _record(store, sweep_id, idx, label, kind, weights, value, heuristic=False):
    key = f"{label}-key"
    store.put(key, variant=label, suite="s@1", payload={"v": value}, timings={"swap_s": 0.01})
    store.record_point(
        sweep_id,
        idx,
        label=label,
        kind=kind,
        weights=weights,
        variant=label,
        result_keys={"s": key},
        scores={
            "aggregates": {"general": {"value": value, "n": 10, "lo": value - 0.1, "hi": value + 0.1}},
            "heuristic": heuristic,
        },
        timings={"swap_s": 0.01, "generate_s": 1.0, "score_s": 0.001},
    )


def test_sweeps_link_points_and_export(tmp_path):
    with ResultStore(tmp_path / "r.db") as store:
        sweep_id = store.begin_sweep({"weights": [0.0, 0.5]})
        assert store.begin_sweep({"weights": [0.0, 0.5]}) == sweep_id  # same spec, same sweep
        assert store.begin_sweep({"weights": [0.0, 1.0]}) != sweep_id
        _record(store, sweep_id, 0, "general", "reference", [], 0.7)
        _record(store, sweep_id, 1, "ω=0.5", "variant", [0.5], 0.6, heuristic=True)
        points = store.sweep_points(sweep_id)
        assert [p["label"] for p in points] == ["general", "ω=0.5"]
        assert points[1]["weights"] == [0.5]
        assert points[1]["suites"]["s"]["payload"] == {"v": 0.6}
        assert store.resolve_sweep(sweep_id[:6]) == sweep_id

        csv_path = store.export_csv(sweep_id, tmp_path / "out" / "sweep.csv")
        json_path = store.export_json(sweep_id, tmp_path / "sweep.json")
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["label"] for r in rows] == ["general", "ω=0.5"]
    assert rows[1]["w1"] == "0.5" and rows[0]["w1"] == ""
    assert float(rows[1]["general"]) == pytest.approx(0.6)
    assert rows[1]["heuristic"] == "yes" and rows[0]["heuristic"] == ""
    document = json.loads(json_path.read_text())
    assert document["spec"] == {"weights": [0.0, 0.5]}
    assert document["points"][0]["scores"]["aggregates"]["general"]["value"] == pytest.approx(0.7)
    assert not list(tmp_path.glob("**/*.tmp"))  # atomic writes leave no temp files


def test_csv_of_no_points_is_just_a_header():
    assert points_to_csv([]).strip() == "label,kind,heuristic,swap_s,generate_s,score_s"


def test_not_a_database_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_text("this is not sqlite, it is a text file with enough bytes to have a header" * 20)
    with pytest.raises(StoreError, match="bad.db"):
        ResultStore(bad)


def test_unknown_sweep_id_names_the_store(tmp_path):
    with ResultStore(tmp_path / "r.db") as store:
        with pytest.raises(StoreError, match="no sweeps"):
            store.resolve_sweep()
        store.begin_sweep({"a": 1})
        with pytest.raises(StoreError, match="zzz"):
            store.resolve_sweep("zzz")
