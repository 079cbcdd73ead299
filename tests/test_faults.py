"""Bad inputs and faults: every case must stop with exit code 2 (bad input), a message naming the offending file,
tensor, field or line, no traceback, and nothing left behind or changed.

Most cases run the CLI in this process (`engine.cli.main`, the console script's own entry point; a stray exception
fails the test) on tiny synthetic checkpoints, so the battery stays fast; `TestConsoleScript` repeats the ones that
touch process-level behaviour (exit status, OS errors, locks, umask, signals) through `.venv/bin/mergescope`.
Read-only and full-disk cases mount a tmpfs (root only) and skip cleanly where that is not possible.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from engine import cli
from engine.synthetic import llama_config, write_family, write_family_member

REPO = Path(__file__).resolve().parents[1]
CONSOLE = REPO / ".venv" / "bin" / "mergescope"

TA = """merge_method: task_arithmetic
base_model: {base}
models:
  - {{model: {a}, parameters: {{weight: 1.0}}}}
  - {{model: {b}, parameters: {{weight: 0.5}}}}
"""


# --- helpers ---------------------------------------------------------------------------------------------------
@dataclass
class Run:
    rc: int
    out: str
    err: str


def ms(*argv: str | os.PathLike) -> Run:
    """`mergescope ARGV` in this process: exit code, stdout, stderr (argparse's own exits included)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main([str(a) for a in argv])
        except SystemExit as exc:
            rc = int(exc.code or 0)
    return Run(rc, out.getvalue(), err.getvalue())


def console(*argv: str | os.PathLike, timeout: float = 120, **kwargs) -> Run:
    """`mergescope ARGV` as a separate process through the console script."""
    env = {**os.environ, "PYTHONPATH": str(REPO), **kwargs.pop("env", {})}
    proc = subprocess.run(
        [str(CONSOLE), *map(str, argv)], capture_output=True, text=True, timeout=timeout, env=env, **kwargs
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def snapshot(root: Path) -> dict[str, object]:
    """Every entry under `root` with size and mtime (symlinks not followed): "nothing changed" is equality."""
    state: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            # A folder's mtime moves when a temporary entry comes and goes: only its mode counts.
            is_dir = name in dirnames and not p.is_symlink()
            state[str(p.relative_to(root))] = (st.st_mode,) if is_dir else (st.st_mode, st.st_size, st.st_mtime_ns)
    return state


def assert_refused(run: Run, *needles: str) -> None:
    assert run.rc == 2, f"exit {run.rc}\n{run.err}"
    assert "Traceback" not in run.err, run.err
    assert run.err.startswith("error: ") or "\nerror: " in run.err, run.err
    for needle in needles:
        assert needle in run.err, f"{needle!r} not in:\n{run.err}"


@pytest.fixture(scope="module")
def family(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("family")
    return write_family(root, llama_config(), names=("base", "a", "b"))


@pytest.fixture
def ws(tmp_path: Path, family) -> Path:
    """A workspace holding a copy of the family (cases may damage their copy)."""
    for name, path in family.items():
        shutil.copytree(path, tmp_path / name)
    (tmp_path / "c.yml").write_text(TA.format(base=tmp_path / "base", a=tmp_path / "a", b=tmp_path / "b"))
    return tmp_path


def config(ws: Path, text: str, name: str = "c.yml") -> Path:
    path = ws / name
    path.write_text(text.format(base=ws / "base", a=ws / "a", b=ws / "b"))
    return path


def refused_unchanged(ws: Path, argv: list, *needles: str) -> Run:
    before = snapshot(ws)
    run = ms(*argv)
    assert_refused(run, *needles)
    assert snapshot(ws) == before, "the refused command changed or left files"
    return run


@contextlib.contextmanager
def tmpfs(path: Path, options: str):
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


# --- merge: config errors ---------------------------------------------------------------------------------------
CONFIG_CASES = {
    "invalid-yaml": ("merge_method: [task_arithmetic\n", ["c.yml", "invalid YAML (line 2"]),
    "unknown-method": ("merge_method: frobnicate\nmodels: [{a}]\n", ["c.yml", "frobnicate"]),
    "unknown-field": (TA + "colour: blue\n", ["c.yml", "colour"]),
    "unknown-parameter": (TA.replace("weight: 0.5", "weight: 0.5, dense: 0.3"), ["models[1]", "dense"]),
    "weight-not-a-number": (TA.replace("weight: 0.5", "weight: lots"), ["models[1].parameters.weight", "lots"]),
    "duplicate-model": (
        "merge_method: task_arithmetic\nbase_model: {base}\nmodels:\n"
        "  - {{model: {a}, parameters: {{weight: 1.0}}}}\n  - {{model: {a}, parameters: {{weight: 0.0}}}}\n",
        ["models[1]", "listed twice", "models[0]"],
    ),
    "ties-negative-density": (
        TA.replace("task_arithmetic", "ties").replace("weight: 0.5", "weight: 0.5, density: -0.2"),
        ["models[1].parameters.density", "-0.2", "between 0 and 1"],
    ),
    "density-above-one-in-gradient": (
        TA.replace("task_arithmetic", "ties").replace("weight: 0.5", "weight: 0.5, density: [0.5, 1.5]"),
        ["density", "1.5"],
    ),
    "breadcrumbs-gamma-out-of-range": (
        TA.replace("task_arithmetic", "breadcrumbs") + "parameters: {{gamma: 2}}\n",
        ["parameters.gamma", "2"],
    ),
    "unknown-dtype": (TA + "dtype: float8\n", ["dtype", "float8"]),
    "ties-without-base": (
        "merge_method: ties\nmodels:\n  - {{model: {a}, parameters: {{weight: 1.0}}}}\n",
        ["base_model", "ties"],
    ),
    "empty-models": ("merge_method: linear\nmodels: []\n", ["models"]),
    "unknown-chat-template-name": (TA + "chat_template: chatmll\n", ["chat_template", "chatmll"]),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_merge_refuses_bad_config(ws, case):
    text, needles = CONFIG_CASES[case]
    config(ws, text)
    # Fields and parameters mergekit does not read are ignored with a warning by default, refused with --strict.
    strict = ["--strict"] if case.startswith("unknown-") else []
    refused_unchanged(ws, ["merge", ws / "c.yml", "--out", ws / "out", "-q", *strict], *needles)


def test_config_missing(ws):
    refused_unchanged(ws, ["merge", ws / "nope.yml", "--out", ws / "out"], "nope.yml", "no such file")


def test_config_is_a_folder(ws):
    refused_unchanged(ws, ["merge", ws / "a", "--out", ws / "out"], str(ws / "a"), "folder")


def test_config_without_yml_suffix_is_read_as_a_file(ws):
    """(3) `merge myconfig` reads the file; a bad one is named, not parsed as YAML text."""
    shutil.copy(ws / "c.yml", ws / "myconfig")
    run = ms("merge", ws / "myconfig", "--out", ws / "out", "-q")
    assert run.rc == 0, run.err
    assert (ws / "out" / "model.safetensors").is_file()
    (ws / "bad").write_text("just words\n")
    refused_unchanged(ws, ["merge", ws / "bad", "--out", ws / "out2"], str(ws / "bad"), "mapping")


@pytest.mark.parametrize(
    "flag,value,needle",
    [("--shard-size", "lots", "--shard-size"), ("--threads", "0", "--threads"), ("--device", "tpu", "--device")],
)
def test_merge_refuses_bad_flag(ws, flag, value, needle):
    refused_unchanged(ws, ["merge", ws / "c.yml", "--out", ws / "out", flag, value], needle)


# --- merge: checkpoint errors -----------------------------------------------------------------------------------
def _rewrite_tensor(folder: Path, name: str, fn) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    tensors[name] = fn(tensors[name])
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def test_general_without_config_json(ws):
    """(6) the merged model's config.json (the base's, as in mergekit) would be {"torch_dtype": ...}: refused,
    naming the file."""
    (ws / "base" / "config.json").unlink()
    refused_unchanged(ws, ["merge", ws / "c.yml", "--out", ws / "out"], str(ws / "base" / "config.json"), "missing")


def test_tokenizer_source_without_tokenizer(ws):
    """(7) an explicit tokenizer_source without tokenizer files is an error."""
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (ws / "b" / f).unlink()
    config(ws, TA + "tokenizer_source: {b}\n")
    refused_unchanged(ws, ["merge", ws / "c.yml", "--out", ws / "out"], "tokenizer_source", str(ws / "b"))


def test_default_tokenizer_source_without_tokenizer_warns(ws):
    """(7) the default source (the base model, as in mergekit) without tokenizer: merged, with a visible
    warning."""
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (ws / "base" / f).unlink()
    run = ms("merge", ws / "c.yml", "--out", ws / "out", "-q")
    assert run.rc == 0, run.err
    assert "warning: " in run.err and str(ws / "base") in run.err and "no tokenizer" in run.err


def test_tensor_in_two_shards(ws):
    """(8) a tensor in two shards: reported with both files, not silently taken from one."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(ws / "b" / "model.safetensors")
    names = list(tensors)
    half = len(names) // 2
    (ws / "b" / "model.safetensors").unlink()
    first = {n: tensors[n] for n in names[:half]}
    second = {n: tensors[n] for n in names[half:]}
    second[names[0]] = tensors[names[0]] + 1  # the copy the index does not name
    save_file(first, ws / "b" / "model-00001-of-00002.safetensors")
    save_file(second, ws / "b" / "model-00002-of-00002.safetensors")
    weight_map = {n: "model-00001-of-00002.safetensors" for n in names[:half]}
    weight_map.update({n: "model-00002-of-00002.safetensors" for n in names[half:]})
    (ws / "b" / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    refused_unchanged(ws, ["merge", ws / "c.yml", "--out", ws / "out"], names[0], "two shards")


def test_index_names_a_shard_without_the_tensor(ws):
    from safetensors.torch import load_file

    names = list(load_file(ws / "b" / "model.safetensors"))
    weight_map = {n: "model.safetensors" for n in names}
    weight_map["model.extra.weight"] = "model.safetensors"
    (ws / "b" / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    refused_unchanged(ws, ["merge", ws / "c.yml", "--out", ws / "out"], "model.extra.weight", "index")


def test_shape_mismatch(ws):
    _rewrite_tensor(ws / "b", "model.norm.weight", lambda t: torch.ones(t.shape[0] + 1))
    refused_unchanged(ws, ["merge", ws / "c.yml", "--out", ws / "out"], "model.norm.weight", "shape")


def test_missing_tensor(ws):
    from safetensors.torch import load_file, save_file

    tensors = load_file(ws / "b" / "model.safetensors")
    del tensors["model.norm.weight"]
    save_file(tensors, ws / "b" / "model.safetensors")
    refused_unchanged(ws, ["merge", ws / "c.yml", "--out", ws / "out"], "model.norm.weight", str(ws / "b"))


def test_vocab_mismatch(ws):
    cfg = json.loads((ws / "b" / "config.json").read_text())
    (ws / "b" / "config.json").write_text(json.dumps({**cfg, "vocab_size": 999}))
    refused_unchanged(ws, ["merge", ws / "c.yml", "--out", ws / "out"], "vocab", "999")


def test_nan_in_input(ws):
    def poison(t):
        t = t.clone()
        t.view(-1)[3] = float("nan")
        return t

    _rewrite_tensor(ws / "b", "model.layers.0.mlp.up_proj.weight", poison)
    refused_unchanged(ws, ["merge", ws / "c.yml", "--out", ws / "out"], "model.layers.0.mlp.up_proj.weight", "NaN")


def test_truncated_shard(ws):
    shard = ws / "b" / "model.safetensors"
    shard.write_bytes(shard.read_bytes()[:-1000])
    refused_unchanged(ws, ["merge", ws / "c.yml", "--out", ws / "out"], str(shard), "truncated")


def test_corrupt_header(ws):
    shard = ws / "b" / "model.safetensors"
    data = bytearray(shard.read_bytes())
    data[8:16] = b"\xff" * 8
    shard.write_bytes(bytes(data))
    refused_unchanged(ws, ["merge", ws / "c.yml", "--out", ws / "out"], str(shard))


def test_pickle_only_checkpoint_refused(ws):
    from safetensors.torch import load_file

    torch.save(load_file(ws / "b" / "model.safetensors"), ws / "b" / "pytorch_model.bin")
    (ws / "b" / "model.safetensors").unlink()
    refused_unchanged(ws, ["merge", ws / "c.yml", "--out", ws / "out"], "pytorch_model.bin", "--allow-pickle")


def test_corrupt_config_json(ws):
    (ws / "b" / "config.json").write_text("{not json")
    refused_unchanged(ws, ["merge", ws / "c.yml", "--out", ws / "out"], str(ws / "b" / "config.json"))


# --- merge: the output folder -----------------------------------------------------------------------------------
def test_output_exists(ws):
    (ws / "out").mkdir()
    (ws / "out" / "keep.txt").write_text("mine")
    refused_unchanged(ws, ["merge", ws / "c.yml", "--out", ws / "out"], str(ws / "out"), "--overwrite")


@pytest.mark.parametrize("target", ["a", "."])
def test_output_is_or_contains_an_input(ws, target):
    """(12) --out being an input (or a folder holding one) is refused, with --overwrite too."""
    out = (ws / target).resolve()
    run = refused_unchanged(ws, ["merge", ws / "c.yml", "--out", out, "--overwrite"], str(out), "input model")
    assert ("is the input" if target == "a" else "contains the input") in run.err


def test_output_symlink_loop(ws):
    """(2) --out through a symlink loop: a named error, not RuntimeError."""
    (ws / "loop").symlink_to(ws / "loop")
    refused_unchanged(ws, ["merge", ws / "c.yml", "--out", ws / "loop" / "x"], "loop", "symlink loop")


def test_output_parent_is_a_file(ws):
    (ws / "plain").write_text("x")
    refused_unchanged(ws, ["merge", ws / "c.yml", "--out", ws / "plain" / "out"], str(ws / "plain"))


def test_output_read_only_fs(ws):
    """(2) a read-only file system: exit 2 naming the folder and EROFS."""
    with tmpfs(ws / "ro", "size=1m,ro"):
        refused_unchanged(ws, ["merge", ws / "c.yml", "--out", ws / "ro" / "x"], str(ws / "ro" / "x"), "read-only")


def test_output_disk_full(ws):
    """(2) a full disk: exit 2, ENOSPC named, nothing left on the device."""
    with tmpfs(ws / "full", "size=64k"):
        refused_unchanged(ws, ["merge", ws / "c.yml", "--out", ws / "full" / "x"], str(ws / "full" / "x"), "no space")
        assert list((ws / "full").iterdir()) == []


def test_output_permission_denied(ws):
    """(2) a folder the process may not write (immutable: refused even to root): exit 2, EPERM named."""
    locked = ws / "locked"
    locked.mkdir()
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", locked], capture_output=True).returncode:
        pytest.skip("chattr +i is not possible here")
    try:
        refused_unchanged(ws, ["merge", ws / "c.yml", "--out", locked / "x"], str(locked / "x"), "not permitted")
    finally:
        subprocess.run(["chattr", "-i", locked], check=False)


def test_output_locked_by_another_merge(ws):
    """(9) while another process holds the output lock, a merge to the same folder stops at once."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\nfrom engine.fs import OutputLock\n"
         "with OutputLock(Path(sys.argv[1])):\n    print('held', flush=True)\n    time.sleep(60)\n", ws / "out"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        run = ms("merge", ws / "c.yml", "--out", ws / "out")
        assert_refused(run, str(ws / "out"), "another merge", str(holder.pid))
        assert not (ws / "out").exists()
    finally:
        holder.kill()
        holder.wait()


def test_stale_temp_folder_removed_with_a_warning(ws):
    """(10) a `.NAME.tmp-*` folder left by a killed run is removed (and said so) by the next run."""
    stale = ws / ".out.tmp-killed"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"\0" * 1000)
    run = ms("merge", ws / "c.yml", "--out", ws / "out", "-q")
    assert run.rc == 0, run.err
    assert not stale.exists()
    assert "warning: removed" in run.err and str(stale) in run.err


def test_output_folder_follows_umask(ws):
    """(11) the output folder and its files get the umask's modes, not mkdtemp's 0700."""
    old = os.umask(0o027)
    try:
        run = ms("merge", ws / "c.yml", "--out", ws / "out", "-q")
    finally:
        os.umask(old)
    assert run.rc == 0, run.err
    assert (ws / "out").stat().st_mode & 0o777 == 0o750
    assert (ws / "out" / "model.safetensors").stat().st_mode & 0o777 == 0o640


# --- inspect ----------------------------------------------------------------------------------------------------
def test_inspect_json_and_text(ws):
    """(1) --json serialises; the text report's checkpoints line names every checkpoint."""
    run = ms("inspect", ws / "base", ws / "a", ws / "b", "--json")
    assert run.rc == 0, run.err
    assert json.loads(run.out)["checkpoints"] == ["base", "a", "b"]
    from safetensors.torch import load_file, save_file

    tensors = load_file(ws / "b" / "model.safetensors")
    del tensors["model.norm.weight"]
    save_file(tensors, ws / "b" / "model.safetensors")
    text = ms("inspect", ws / "base", ws / "b")
    assert text.rc == 1 and text.out.splitlines()[0] == "checkpoints: base, b"
    assert "model.norm.weight missing from b" in text.out
    assert json.loads(ms("inspect", ws / "base", ws / "b", "--json").out)["ok"] is False


@pytest.mark.parametrize("what", ["missing", "no-weights", "file"])
def test_inspect_refuses(ws, what):
    target = {"missing": ws / "nothing", "no-weights": ws / "empty", "file": ws / "c.yml"}[what]
    if what == "no-weights":
        target.mkdir()
    refused_unchanged(ws, ["inspect", ws / "base", target], str(target))


# --- sweep input errors (all before any engine starts) ----------------------------------------------------------
def write_suite(folder: Path, items: list[dict] | str, **manifest) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = {"name": folder.name, "version": 1, "scorer": "contains", "aggregate": "general",
            "generation": {"max_tokens": 4}, **manifest}  # fmt: skip
    import yaml

    (folder / "suite.yaml").write_text(yaml.safe_dump(data))
    lines = items if isinstance(items, str) else "".join(json.dumps(i) + "\n" for i in items)
    (folder / "items.jsonl").write_text(lines)
    return folder


ITEMS = [{"id": "q1", "prompt": "say yes", "answer": "yes"}, {"id": "q2", "prompt": "say no", "answer": "no"}]


def sweep_argv(ws: Path, *extra: str | os.PathLike, suite: Path | None = None) -> list:
    suite = suite or write_suite(ws / "suites" / "tiny", ITEMS)
    return ["sweep", "--base", ws / "base", "--general", ws / "a", "--skill", f"s={ws / 'b'}", "--evals", suite,
            "--store", ws / "store.db", "--backend", "transformers", *extra]  # fmt: skip


@pytest.mark.parametrize(
    "weights,needle",
    [("1:0:0.1", "STOP"), ("0:1:0.00001", "too many"), ("0,x", "'0,x'"), (",".join(["0.5"] * 10_000), "too many")],
    ids=["reversed", "too-fine", "not-a-number", "10000-list"],
)
def test_sweep_refuses_weights(ws, weights, needle):
    write_suite(ws / "suites" / "tiny", ITEMS)
    refused_unchanged(ws, sweep_argv(ws, "--weights", weights), "--weights", needle)


SUITE_CASES = {
    "malformed-line": ('{"id": "q1", "prompt": "x", "answer": "a"}\n{"id": "q2", "prompt": \n', {}, ["line 2", "JSON"]),
    "duplicate-id": ([ITEMS[0], ITEMS[0]], {}, ["line 2", "duplicate id", "q1"]),
    "unknown-item-field": ([{**ITEMS[0], "answr": "a"}], {}, ["line 1", "answr"]),
    "unknown-manifest-field": (ITEMS, {"scorrer": "x"}, ["suite.yaml", "scorrer"]),
    "unknown-scorer": (ITEMS, {"scorer": "telepathy"}, ["suite.yaml", "telepathy"]),
    "empty": ("", {}, ["items.jsonl", "empty"]),
    "bad-generation": (ITEMS, {"generation": {"max_tokens": 0}}, ["suite.yaml", "max_tokens"]),
}


@pytest.mark.parametrize("case", list(SUITE_CASES))
def test_sweep_refuses_bad_suite(ws, case):
    items, manifest, needles = SUITE_CASES[case]
    suite = write_suite(ws / "suites" / "bad", items, **manifest)
    refused_unchanged(ws, sweep_argv(ws, suite=suite), *needles)


def test_sweep_refuses_oversized_suite(ws):
    suite = write_suite(ws / "suites" / "big", ITEMS)
    with open(suite / "items.jsonl", "r+b") as fh:
        fh.truncate(300 * 2**20)  # sparse: costs no disk
    refused_unchanged(ws, sweep_argv(ws, suite=suite), str(suite / "items.jsonl"), "too large")


def test_sweep_refuses_unknown_suite_path(ws):
    refused_unchanged(ws, sweep_argv(ws, suite=ws / "suites" / "no-such-suite"), "no-such-suite")


def test_sweep_refuses_incompatible_checkpoints(ws):
    write_family_member(ws / "other", llama_config(hidden_size=32))
    argv = sweep_argv(ws)
    argv[argv.index(f"s={ws / 'b'}")] = f"s={ws / 'other'}"
    refused_unchanged(ws, argv, "not compatible", "hidden_size")


def test_sweep_refuses_bad_method_param(ws):
    write_suite(ws / "suites" / "tiny", ITEMS)
    refused_unchanged(ws, sweep_argv(ws, "--method", "ties", "--method-param", "density=-0.2"), "density")


# --- the results store ------------------------------------------------------------------------------------------
def _good_store(path: Path) -> None:
    from engine.store import ResultStore

    with ResultStore(path) as store:
        for i in range(400):
            store.put(f"k{i}", variant="v", suite="s", payload={"x": "y" * 200}, timings={})


@pytest.mark.parametrize("damage", ["garbage", "truncated", "newer-schema", "folder"])
def test_sweep_refuses_damaged_store(ws, damage):
    store = ws / "store.db"
    if damage == "garbage":
        store.write_bytes(os.urandom(8192))
    elif damage == "folder":
        store.mkdir()
    else:
        _good_store(store)
        if damage == "truncated":
            store.write_bytes(store.read_bytes()[: store.stat().st_size // 2])
        else:
            with sqlite3.connect(store) as db:
                db.execute("UPDATE meta SET value='7' WHERE name='schema'")
    write_suite(ws / "suites" / "tiny", ITEMS)
    needle = {"garbage": "corrupt", "truncated": "corrupt", "newer-schema": "newer", "folder": "folder"}[damage]
    refused_unchanged(ws, sweep_argv(ws), str(store), needle)


def test_read_only_store(ws):
    from engine.errors import StoreError
    from engine.store import ResultStore

    with tmpfs(ws / "ro", "size=4m"):
        _good_store(ws / "ro" / "store.db")
        subprocess.run(["mount", "-o", "remount,ro", str(ws / "ro")], check=True)
        before = snapshot(ws / "ro")
        with pytest.raises(StoreError, match="read-only|cannot open"):
            store = ResultStore(ws / "ro" / "store.db")
            store.put("new", variant="v", suite="s", payload={}, timings={})
        assert snapshot(ws / "ro") == before


def test_two_processes_write_one_store(tmp_path):
    """Two writers at once: every row of both lands, neither fails on a lock or the schema row."""
    script = (
        "import sys\nfrom engine.store import ResultStore\n"
        "s = ResultStore(sys.argv[1])\n"
        "for i in range(150):\n    s.put(f'{sys.argv[2]}{i}', variant='v', suite='s', payload={'i': i}, timings={})\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen([sys.executable, "-c", script, tmp_path / "s.db", tag], env=env, stderr=subprocess.PIPE)
        for tag in "xy"
    ]
    errors = [p.communicate(timeout=120)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    from engine.store import ResultStore

    with ResultStore(tmp_path / "s.db") as store:
        assert store.count_results() == 300


# --- dashboard API: the path policy -----------------------------------------------------------------------------
@pytest.fixture
def policy(tmp_path, family):
    from ui.paths import PathPolicy

    root = tmp_path / "root"
    root.mkdir()
    shutil.copytree(family["a"], root / "a")
    (root / "out-link").symlink_to(family["b"])  # a symlink inside the root pointing out
    (root / "loop").symlink_to(root / "loop")
    return PathPolicy.from_dirs([root])


@pytest.mark.parametrize(
    "method,text,needle",
    [
        ("checkpoint", "{outside}", "outside the allowed roots"),
        ("checkpoint", "{root}/out-link", "outside the allowed roots"),
        ("checkpoint", "{root}/../{outside_name}", "outside the allowed roots"),
        ("checkpoint", "{root}/a\0x", "NUL"),
        ("existing", "{root}/out-link", "outside the allowed roots"),
        ("existing", "{root}/loop", "symlink loop"),
        ("output_dir", "/tmp/elsewhere", "outside the allowed roots"),
        ("output_dir", "{root}/out-link/sub", "outside the allowed roots"),
        ("output_dir", "{root}/" + "x" * 5000, "too long"),
    ],
    ids=["outside", "symlink-out", "dotdot", "nul", "suite-symlink-out", "loop", "out-outside", "out-via-link",
         "long"],  # fmt: skip
)
def test_path_policy_refuses(policy, family, method, text, needle):
    from engine.errors import MergescopeError

    root = policy.roots[0]
    text = text.format(root=root, outside=family["b"], outside_name=f"../{family['b'].parent.name}/b")
    with pytest.raises(MergescopeError, match=needle):
        getattr(policy, method)(text, field="base")


def test_path_policy_accepts_inside(policy):
    root = policy.roots[0]
    assert policy.checkpoint(str(root / "a"), field="base") == str(root / "a")
    assert policy.output_dir(str(root / "new"), field="out") == root / "new"


def test_huge_prompt_is_refused_by_size(family):
    """A prompt far past the context (2,000 characters for 256 positions) stops with a BackendError naming the
    context limit, before the model runs."""
    from engine.backends.hf_backend import TransformersBackend
    from engine.errors import BackendError

    backend = TransformersBackend(family["a"])
    try:
        with pytest.raises(BackendError, match="prompt too long.*context of 256"):
            backend.generate(None, [[{"role": "user", "content": "x" * 2_000}]], backend_settings())
        assert backend.generate(None, [[{"role": "user", "content": "hi"}]], backend_settings())[0] is not None
    finally:
        backend.close()


def backend_settings():
    from engine.backends import GenerationSettings

    return GenerationSettings(max_tokens=2)


# --- lazy engine start ------------------------------------------------------------------------------------------
def test_stored_sweep_rerun_starts_no_engine(ws):
    """(13) the first run starts an engine and stores every point; the re-run reuses all and starts none."""
    argv = sweep_argv(ws, "--weights", "0,1", "--no-standard-references")
    first = ms(*argv)
    assert first.rc == 0, first.err
    assert "starting the transformers backend" in first.err
    again = ms(*argv)
    assert again.rc == 0, again.err
    assert "starting the" not in again.err and "no engine started" in again.err
    assert again.out == first.out  # the same table, from the store


# --- through the console script (process-level behaviour) --------------------------------------------------------
class TestConsoleScript:
    def test_exit_status_and_message(self, ws):
        shutil.copy(ws / "c.yml", ws / "myconfig")
        ok = console("merge", ws / "myconfig", "--out", ws / "out", "-q")
        assert ok.rc == 0, ok.err
        run = console("merge", ws / "myconfig", "--out", ws / "a", "--overwrite")
        assert_refused(run, "input model")

    @pytest.mark.slow
    def test_two_concurrent_merges_one_wins(self, ws, family):
        """(9) two merges to one folder at once: exactly one succeeds; the other says why."""
        big = llama_config(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, vocab_size=4096)
        paths = write_family(ws / "big", big, names=("base", "a", "b"))
        cfg = TA.format(**{k: str(v) for k, v in paths.items()})
        (ws / "big.yml").write_text(cfg)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        procs = [
            subprocess.Popen([str(CONSOLE), "merge", ws / "big.yml", "--out", ws / "out", "-q"], env=env,
                             stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]  # fmt: skip
        results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
        codes = sorted(rc for rc, _ in results)
        assert codes == [0, 2], results
        loser = next(err for rc, err in results if rc == 2)
        assert "another merge is writing" in loser or "already exists" in loser
        assert "Traceback" not in loser
        assert [p.name for p in ws.iterdir() if p.name.startswith(".out.")] == []

    @pytest.mark.slow
    def test_sigkill_mid_merge_then_next_run_cleans_up(self, ws):
        """(10) SIGKILL mid-merge leaves a temporary folder; the next run removes it and says so."""
        big = llama_config(hidden_size=512, intermediate_size=2048, num_hidden_layers=8, vocab_size=8192)
        paths = write_family(ws / "big", big, names=("base", "a", "b"))
        (ws / "big.yml").write_text(TA.format(**{k: str(v) for k, v in paths.items()}))
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen([str(CONSOLE), "merge", ws / "big.yml", "--out", ws / "out", "-q", "--threads", "1"],
                                env=env)  # fmt: skip
        deadline = time.monotonic() + 120
        while not any(ws.glob(".out.tmp-*/model*.safetensors")) and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        stale = list(ws.glob(".out.tmp-*"))
        assert stale, "the kill came too late to leave a temporary folder"
        run = console("merge", ws / "big.yml", "--out", ws / "out", "-q")
        assert run.rc == 0, run.err
        assert "warning: removed" in run.err and str(stale[0]) in run.err
        assert not any(ws.glob(".out.*"))


# --- the serving engine dies mid-sweep ---------------------------------------------------------------------------
@pytest.mark.slow
def test_killed_engine_worker_mid_sweep(demo_family, tmp_path):
    """The vLLM engine process is killed while the sweep runs: a clear error (exit 2, with how to resume), the
    store intact with the finished points, and the re-run resumes from them. Starts two engines: slow."""
    import psutil

    store = tmp_path / "r.db"
    argv = ["sweep", "--backend", "vllm", "--weights", "0:1:0.25", "--no-standard-references", "--store", store]
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([str(CONSOLE), *map(str, argv)], stderr=subprocess.PIPE, text=True, env=env)
    lines, killed = [], []
    try:
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("[2/") and not killed:
                children = psutil.Process(proc.pid).children(recursive=True)
                engines = [c for c in children if "EngineCore" in " ".join(c.cmdline() + [c.name()])] or children
                for child in engines:
                    child.kill()
                    killed.append(child.pid)
        proc.wait(timeout=300)
    finally:
        proc.kill()
    err = "".join(lines)
    assert killed, err
    assert proc.returncode == 2, err
    assert "Traceback" not in err.split("[2/")[-1] and "error: " in err and "run the same command again" in err
    with sqlite3.connect(store) as db:
        (done,) = db.execute("SELECT COUNT(*) FROM sweep_points").fetchone()
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert done >= 2
    again = console(*argv, timeout=900)
    assert again.rc == 0, again.err
    assert sum("stored" in line for line in again.err.splitlines() if line.startswith("[")) >= done


# --- dashboard API through gradio_client ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dashboard(family, tmp_path_factory):
    """A launched dashboard on the synthetic family, with the transformers backend (no vLLM start needed)."""
    gradio_client = pytest.importorskip("gradio_client")
    from engine.backends.hf_backend import TransformersBackend
    from ui.app import build_app, launch

    work = tmp_path_factory.mktemp("dash")
    for name, path in family.items():
        shutil.copytree(path, work / name)
    suite = write_suite(work / "suite", ITEMS)
    outside = tmp_path_factory.mktemp("outside")
    (work / "link-out").symlink_to(outside)
    (work / "loop").symlink_to(work / "loop")
    # Started by the app on first use: the refusal cases never need it.
    app = build_app(store_path=work / "results.db", allowed_roots=[work], backend_factory=TransformersBackend)
    launch(app, port=None, block=False)
    try:
        yield {"url": app.local_url, "work": work, "suite": suite, "outside": outside, "client": gradio_client}
    finally:
        app.close()
        app.mergescope_engine.close()


def dash_spec(d, *, weights: str = "0,1", base: str | None = None, suite: str | None = None) -> list:
    w = d["work"]
    return [base or str(w / "base"), str(w / "a"), f"s={w / 'b'}", "", "task_arithmetic", "{}", weights, False,
            [], suite or str(d["suite"]), False, False]  # fmt: skip


@pytest.mark.parametrize(
    "where,value,needle",
    [
        ("base", "{work}/link-out", "outside the allowed roots"),
        ("base", "{work}/loop", "symlink loop"),
        ("base", "{outside}", "outside the allowed roots"),
        ("suite", "{work}/link-out", "outside the allowed roots"),
        ("suite", "{work}/../{outside_name}", "outside the allowed roots"),
        ("weights", ",".join(str(i / 10_000) for i in range(10_000)), "too many"),
    ],
    ids=["symlink-out", "loop", "outside", "suite-symlink-out", "suite-dotdot", "10000-weights"],
)
def test_dashboard_refuses(dashboard, where, value, needle):
    d = dashboard
    value = value.format(work=d["work"], outside=d["outside"], outside_name=d["outside"].name)
    kwargs = {where: value}
    c = d["client"].Client(d["url"], verbose=False)
    before = snapshot(d["work"])
    with pytest.raises(d["client"].exceptions.AppError, match=needle):
        c.predict(None, *dash_spec(d, **kwargs), api_name="/sweep")
    assert snapshot(d["work"]) == before


def test_dashboard_export_outside_roots_refused(dashboard):
    d = dashboard
    c = d["client"].Client(d["url"], verbose=False)
    with pytest.raises(d["client"].exceptions.AppError, match="outside the allowed roots|choose a variant"):
        c.predict("ω=0", str(d["outside"] / "x"), False, api_name="/export_checkpoint")
    assert list(d["outside"].iterdir()) == []


@pytest.mark.slow
def test_two_sessions_sweep_at_once(dashboard):
    """Two browser sessions start sweeps at the same moment: both finish, each with its own points (the engine
    queue serialises the swaps)."""
    d = dashboard
    a = d["client"].Client(d["url"], verbose=False)
    b = d["client"].Client(d["url"], verbose=False)
    jobs = [a.submit(None, *dash_spec(d, weights="0,0.5"), api_name="/sweep"),
            b.submit(None, *dash_spec(d, weights="0.25,1"), api_name="/sweep")]  # fmt: skip
    outs = [job.result(timeout=600) for job in jobs]
    for out, labels in zip(outs, (["ω=0", "ω=0.5"], ["ω=0.25", "ω=1"]), strict=True):
        assert out[-1].startswith("Done: 2 points"), out[-1]
        table = out[3]
        rows = [r[0].rstrip(" ★") for r in table["data"]]
        assert sorted(rows) == labels, rows


# --- mergescope score ------------------------------------------------------------------------------------------------
def _score_case(ws: Path, case: str) -> tuple[list, list[str]]:
    suite = write_suite(ws / "suites" / "tiny", ITEMS)
    replies = ws / "replies.jsonl"
    if case == "unknown-suite-id":
        return ["score", "no-such-suite", "--replies", replies], ["no-such-suite"]
    if case == "replies-missing":
        return ["score", suite, "--replies", ws / "nothing.jsonl"], ["nothing.jsonl"]
    if case == "replies-malformed":
        replies.write_text('{"id": "q1", "reply": "yes"}\n{"id": "q2", "reply": \n')
        return ["score", suite, "--replies", replies], ["replies.jsonl", "line 2"]
    if case == "replies-unknown-item":
        replies.write_text('{"id": "q1", "reply": "yes"}\n{"id": "q9", "reply": "no"}\n')
        return ["score", suite, "--replies", replies], ["q9"]
    if case == "unknown-judge":
        replies.write_text('{"id": "q1", "reply": "yes"}\n{"id": "q2", "reply": "no"}\n')
        return ["score", suite, "--replies", replies, "--judge", "oracle"], ["--judge", "oracle"]
    if case == "store-missing":
        return ["score", suite, "--from-store", ws / "none.db"], ["none.db"]
    (ws / "bad.db").write_bytes(os.urandom(8192))
    return ["score", suite, "--from-store", ws / "bad.db"], ["bad.db", "corrupt"]


@pytest.mark.parametrize(
    "case",
    ["unknown-suite-id", "replies-missing", "replies-malformed", "replies-unknown-item", "unknown-judge",
     "store-missing", "store-corrupt"],  # fmt: skip
)
def test_score_refuses(ws, case):
    argv, needles = _score_case(ws, case)
    refused_unchanged(ws, argv, *needles)
