"""`mergescope sweep` end to end: clear errors for bad input, and a real (transformers-backend) sweep with
progress lines, the final table, exports and a re-run that reuses the store.

The full CLI run uses the transformers backend because a test session holds only one vLLM engine (the shared
`vllm_backend` fixture); the vLLM path of the same runner is covered in test_sweep.py.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from engine.cli import main


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["sweep", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _family_args(family) -> list[str]:
    name, path = next(iter(family.skills.items()))
    return ["--base", family.base, "--general", family.general, "--skill", f"{name}={path}"]


def _suite_copy(family, tmp_path: Path, name: str = "suite") -> Path:
    """A copy of the first demo suite, for tests that break it."""
    source = Path(family.suites[0])
    if (source / "suite.yaml").is_file():
        return Path(shutil.copytree(source, tmp_path / name))
    raise pytest.skip(f"first demo suite {source} is not a suite folder")


def _small_suite(family, tmp_path: Path, n: int = 16) -> Path:
    """The first demo suite cut to `n` items: the CLI runs below exercise the whole loop, not the suite size."""
    suite = _suite_copy(family, tmp_path, name="small")
    items = (suite / "items.jsonl").read_text().splitlines()[:n]
    (suite / "items.jsonl").write_text("\n".join(items) + "\n")
    return suite


def _result_rows(store: Path) -> dict[str, float]:
    import sqlite3

    with sqlite3.connect(store) as db:
        return dict(db.execute("SELECT key, created FROM results").fetchall())


@pytest.mark.parametrize(("grid", "count"), [([], 1), (["--grid"], 2)])
def test_demo_default_sweeps_the_first_skill_or_a_grid_of_two(demo_family, grid, count):
    from engine.cli import build_parser
    from engine.commands.sweep import build_spec

    argv = ["sweep", *grid]
    spec = build_spec(build_parser(argv).parse_args(argv))
    assert list(spec.skills) == list(demo_family.skills)[:count]
    assert spec.grid == bool(grid)


def test_help_mentions_the_demo_default(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", "--help"])
    assert exit_info.value.code == 0
    assert "demo family" in capsys.readouterr().out


def test_partial_checkpoint_flags(capsys, demo_family, tmp_path):
    code, _, err = _run(capsys, "--base", demo_family.base, "--store", tmp_path / "r.db")
    assert code == 2 and "--general, --skill missing" in err


def test_unknown_suite(capsys, demo_family, tmp_path):
    missing = tmp_path / "no-such-suite"
    code, _, err = _run(capsys, *_family_args(demo_family), "--evals", missing, "--store", tmp_path / "r.db")
    assert code == 2 and err.startswith("error:") and "no-such-suite" in err


def test_empty_suite(capsys, demo_family, tmp_path):
    suite = _suite_copy(demo_family, tmp_path)
    (suite / "items.jsonl").write_text("")
    code, _, err = _run(capsys, *_family_args(demo_family), "--evals", suite, "--store", tmp_path / "r.db")
    assert code == 2 and "items.jsonl" in err


def test_malformed_jsonl_names_the_line(capsys, demo_family, tmp_path):
    suite = _suite_copy(demo_family, tmp_path)
    lines = (suite / "items.jsonl").read_text().splitlines()
    lines.insert(1, '{"id": "broken", "prompt": ')
    (suite / "items.jsonl").write_text("\n".join(lines) + "\n")
    code, _, err = _run(capsys, *_family_args(demo_family), "--evals", suite, "--store", tmp_path / "r.db")
    assert code == 2 and "items.jsonl" in err and "line 2" in err


def test_incompatible_checkpoints(capsys, demo_family, tmp_path):
    other = shutil.copytree(demo_family.general, tmp_path / "odd-general")
    config = json.loads((other / "config.json").read_text())
    config["num_hidden_layers"] = int(config["num_hidden_layers"]) + 1
    (other / "config.json").write_text(json.dumps(config))
    name, path = next(iter(demo_family.skills.items()))
    code, _, err = _run(
        capsys,
        *["--base", demo_family.base, "--general", other, "--skill", f"{name}={path}"],
        *["--evals", demo_family.suites[0], "--store", tmp_path / "r.db"],
    )
    assert code == 2 and "not compatible" in err and "num_hidden_layers" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--weights", "0:1:0"], "--weights"),
        (["--grid"], "--grid needs exactly two skills"),
        (["--reference", "nopath"], "expected NAME=PATH"),
        (["--dataset-sizes", "general=lots"], "--dataset-sizes"),
    ],
)
def test_bad_flags(capsys, demo_family, tmp_path, extra, message):
    code, _, err = _run(
        capsys,
        *_family_args(demo_family),
        "--evals",
        demo_family.suites[0],
        "--store",
        tmp_path / "r.db",
        *extra,
    )
    assert code == 2 and message in err


def test_sweep_runs_exports_and_reuses_the_store(capsys, demo_family, tmp_path):
    store, csv_path, json_path = tmp_path / "r.db", tmp_path / "sweep.csv", tmp_path / "sweep.json"
    plot_path = tmp_path / "plot.html"
    args = [
        *_family_args(demo_family),
        *["--evals", _small_suite(demo_family, tmp_path), "--weights", "0,1", "--no-standard-references"],
        *["--backend", "transformers", "--store", store, "--csv", csv_path, "--json", json_path],
        *["--plot", plot_path, "--no-heuristic-point"],
    ]
    code, out, err = _run(capsys, *args)
    assert code == 0, err
    progress = [line for line in err.splitlines() if line.startswith("[")]
    assert len(progress) == 2 and all(
        "swap" in line and "gen" in line and "score" in line for line in progress
    )
    assert "ω=0" in out and "ω=1" in out and "point" in out.splitlines()[0]
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["label"] for r in rows] == ["ω=0", "ω=1"] and [r["w1"] for r in rows] == ["0.0", "1.0"]
    document = json.loads(json_path.read_text())
    assert len(document["points"]) == 2 and document["points"][1]["suites"]
    html = plot_path.read_text()  # both plots, plotly.js inlined, every point drawn
    assert html.count("plotly-graph-div") == 2 and "Tradeoff" in html and "ω=0" in html and "ω=1" in html

    code, out_again, err = _run(capsys, *args)
    assert code == 0
    progress = [line for line in err.splitlines() if line.startswith("[")]
    assert len(progress) == 2 and all("stored" in line for line in progress)
    assert out_again == out  # the same table from the stored results


def test_killed_sweep_resumes_without_recomputing(capsys, demo_family, tmp_path):
    """A sweep killed with SIGKILL (no cleanup at all) keeps every finished result; the re-run reuses them (the
    stored rows are not rewritten) and computes only the rest."""
    import os
    import signal
    import subprocess
    import sys

    store = tmp_path / "r.db"
    args = [
        *_family_args(demo_family),
        *["--evals", _small_suite(demo_family, tmp_path, n=8), "--weights", "0:1:0.2", "--no-standard-references"],
        *["--backend", "transformers", "--store", store, "--no-heuristic-point"],
    ]
    command = [sys.executable, "-m", "engine.cli", "sweep", *map(str, args)]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    done = 0
    try:
        for line in proc.stderr:
            done += line.startswith("[")
            if done == 2:
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    assert done == 2
    before = _result_rows(store)
    assert len(before) >= 2  # what finished before the kill is on disk

    code, _, err = _run(capsys, *args)
    assert code == 0, err
    progress = [line for line in err.splitlines() if line.startswith("[")]
    stored = [line for line in progress if "stored" in line]
    assert len(progress) == 6 and len(stored) == len(before) and len(stored) < 6
    after = _result_rows(store)
    assert len(after) == 6 and all(after[key] == created for key, created in before.items())


@pytest.mark.slow
def test_demo_sweep_with_vllm_defaults(capsys, demo_family, tmp_path):
    """`mergescope sweep` with no checkpoint flags: the demo family, its suites and references, on vLLM (starts its
    own engine, hence slow)."""
    code, out, err = _run(capsys, "--weights", "0,0.5", "--backend", "vllm", "--store", tmp_path / "r.db")
    assert code == 0, err
    assert "vllm backend ready" in err
    # a row: label [*] kind scores... (the * marks the |D|/|G| point)
    rows = [line.split()[0] for line in out.splitlines()[2:] if {"reference", "variant"} & set(line.split()[1:3])]
    assert rows[:2] == ["general", "base"]
    first_skill = next(iter(demo_family.skills))
    assert {f"skill:{first_skill}"} | set(demo_family.references) <= set(rows)
    assert len([r for r in rows if r.startswith("ω=")]) == 2  # the safety skill alone (no --grid)
    assert f"heuristic ω = |D|/|G|: {first_skill} 0.500" in out  # the family's |D_safety|/|G| = 8000/16000
