"""`mergescope sweep`'s engine flags: bad values stop with exit 2 and a message naming the flag, before any engine
runs; the parsed flags reach `make_backend` unchanged."""

from __future__ import annotations

import pytest

from engine.cli import build_parser, main
from engine.commands.engine_args import backend_options


def _sweep(capsys, tmp_path, *args: str) -> tuple[int, str]:
    code = main(["sweep", "--weights", "0", "--store", str(tmp_path / "r.db"), *args])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "--workers must be >= 1"),
        (["--backend", "transformers", "--tensor-parallel-size", "2"], "need the vllm backend"),
        (["--backend", "transformers", "--pipeline-parallel-size", "2"], "need the vllm backend"),
    ],
)
def test_bad_engine_flags_exit_2_naming_the_flag(capsys, tmp_path, args, message):
    code, err = _sweep(capsys, tmp_path, *args)
    assert code == 2 and message in err
    assert "ready in" not in err  # stopped before any engine was started


def test_unknown_dtype_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["sweep", "--dtype", "int4"])
    assert exc.value.code == 2 and "--dtype" in capsys.readouterr().err


def test_engine_flags_reach_make_backend():
    argv = ["sweep", "--backend", "vllm", "--dtype", "bfloat16", "--resident-swaps", "off",
            "--tensor-parallel-size", "4", "--pipeline-parallel-size", "2", "--device", "cuda"]  # fmt: skip
    options = backend_options(build_parser(argv).parse_args(argv))
    assert options == {
        "kind": "vllm",
        "device": "cuda",
        "dtype": "bfloat16",
        "resident": "off",
        "tensor_parallel_size": 4,
        "pipeline_parallel_size": 2,
    }
