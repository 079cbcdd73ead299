"""Run a model's Python reply against an item's test code, in a subprocess: pass@1 for coding skills.

Isolation, in layers (what this machine allows; see `sandbox_description()`):
- its own empty temp directory as cwd and HOME, removed afterwards; a minimal environment (no proxies, no
  PYTHON* variables) and `python -I` (isolated mode: no user site, no env-driven imports);
- no network: a fresh network namespace via `unshare -rn` when the kernel allows unprivileged user
  namespaces (only a down loopback inside), and in every case a guard that makes socket creation and name
  resolution raise before the program runs;
- no access to the user's home: where mount namespaces are allowed too (`unshare -rnm`), every entry of
  it is covered for the program's lifetime (directories by an empty tmpfs with no permissions, files by
  /dev/null), except the one holding the Python interpreter itself;
- resource limits (setrlimit): CPU seconds, address space, file size, no core dumps; a wall-clock timeout
  that kills the whole process group (start_new_session), so an infinite loop or a child process cannot
  outlive it.
This is containment for model-written test snippets, not a security boundary against a hostile author.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)

# Prepended to the program: resource limits, then sockets and DNS blocked at the Python level, before the
# program's own code runs. (Setting limits here rather than in a preexec_fn keeps Popen safe to call from
# the scorer's worker threads.)
_GUARD = """\
import resource as _r
_r.setrlimit(_r.RLIMIT_CPU, ({cpu_s}, {cpu_s} + 1))
_r.setrlimit(_r.RLIMIT_AS, ({mem_bytes}, {mem_bytes}))
_r.setrlimit(_r.RLIMIT_FSIZE, ({fsize}, {fsize}))
_r.setrlimit(_r.RLIMIT_CORE, (0, 0))
del _r

import socket as _s

def _no_network(*args, **kwargs):
    raise OSError("network access is disabled in the python_exec sandbox")

class _NoSocket(_s.socket):
    def __init__(self, *args, **kwargs):
        _no_network()

_s.socket = _NoSocket
_s.create_connection = _no_network
_s.getaddrinfo = _no_network
_s.gethostbyname = _no_network
_s.gethostbyname_ex = _no_network
del _s, _NoSocket
"""


@dataclass(frozen=True)
class ExecResult:
    passed: bool
    status: str  # passed | failed | timeout
    returncode: int | None
    output_tail: str  # last part of stdout+stderr, to show why an item failed


def extract_code(reply: str) -> str:
    """The code in a reply: its fenced blocks tagged python/py (or untagged) joined, else the whole reply."""
    blocks = [body for lang, body in _FENCE.findall(reply) if lang.lower() in ("", "python", "py", "python3")]
    return "\n\n".join(blocks) if blocks else reply


def build_program(code_prompt: str | None, code: str) -> str:
    """The program to run for a reply's code. Without a `code_prompt` it is the code itself. With one (a
    HumanEval-style function header and docstring) the reply either continues it — its first code line is
    indented: a function body — or is a whole program, put after the prompt so the prompt's imports and
    helper functions stay defined and the reply's definition wins."""
    if code_prompt is None:
        return code
    first = next((ln for ln in code.splitlines() if ln.strip()), "")
    if first[:1] in (" ", "\t"):
        return code_prompt + code
    return code_prompt + "\n    pass\n\n" + code


@functools.lru_cache(maxsize=1)
def _unshare_prefix() -> tuple[str, ...]:
    """['unshare', '-rn'] if an unprivileged network namespace can be made here, else nothing."""
    exe = shutil.which("unshare")
    if not exe:
        return ()
    try:
        ok = subprocess.run([exe, "-rn", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    return (exe, "-rn") if ok else ()


# Run inside a fresh mount namespace: every path given before "--" is covered (a directory by an empty tmpfs
# with no permissions, a file by /dev/null), then the program is exec'd.
_HIDE = (
    'while [ "$1" != "--" ]; do '
    'if [ -d "$1" ]; then mount -t tmpfs -o size=64k,mode=000 none "$1" || exit 97; '
    'else mount --bind /dev/null "$1" || exit 97; fi; shift; done; shift; exec "$@"'
)


@functools.lru_cache(maxsize=1)
def _can_hide_home() -> bool:
    """Whether an unprivileged mount namespace (unshare -rnm) can cover a directory and a file here."""
    exe = shutil.which("unshare")
    if not exe or not _unshare_prefix():
        return False
    probe = tempfile.mkdtemp(prefix="mergescope-probe-")
    try:
        os.mkdir(os.path.join(probe, "d"))
        open(os.path.join(probe, "f"), "w").close()
        cmd = [
            exe,
            "-rnm",
            "sh",
            "-c",
            _HIDE,
            "sh",
            os.path.join(probe, "d"),
            os.path.join(probe, "f"),
            "--",
            "true",
        ]
        return subprocess.run(cmd, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def _home_entries_to_hide(workdir: str) -> list[str]:
    """Everything in the user's home except the entry holding this Python (pyenv, conda and venvs often
    live there) or the work dir; symlinks are left alone (their targets are not the home's)."""
    home = os.path.realpath(os.path.expanduser("~"))
    if home == "/" or not os.path.isdir(home):
        return []
    keep = {os.path.realpath(p) for p in (sys.executable, sys.base_prefix, sys.prefix, workdir)}
    out = []
    with os.scandir(home) as it:
        for entry in it:
            path = os.path.join(home, entry.name)
            if entry.is_symlink() or any(k == path or k.startswith(path + "/") for k in keep):
                continue
            out.append(path)
    return sorted(out)


def _sandbox_prefix(workdir: str) -> tuple[str, ...]:
    """What runs the interpreter: with mount namespaces, the user's home entries are covered; else the
    network namespace alone; else nothing."""
    if not _can_hide_home():
        return _unshare_prefix()
    hide = _home_entries_to_hide(workdir)
    return (shutil.which("unshare") or "unshare", "-rnm", "sh", "-c", _HIDE, "sh", *hide, "--")


def sandbox_description() -> str:
    net = "network namespace (unshare -rn) + socket guard" if _unshare_prefix() else "socket guard only"
    home = "; home hidden (mount namespace)" if _can_hide_home() else ""
    return (
        f"subprocess, python -I, temp cwd, rlimits (CPU, memory, file size), process-group kill; {net}{home}"
    )


def run_python(code: str, test: str, *, timeout_s: float = 5.0, memory_mb: int = 512) -> ExecResult:
    """Run `code` then `test` in one fresh interpreter; passed means exit status 0 within the time limit."""
    tmp = tempfile.mkdtemp(prefix="mergescope-exec-")
    try:
        prog = os.path.join(tmp, "program.py")
        with open(prog, "w", encoding="utf-8") as f:
            guard = _GUARD.format(cpu_s=int(timeout_s) + 1, mem_bytes=memory_mb * 2**20, fsize=16 * 2**20)
            f.write(guard + "\n" + code + "\n\n" + test + "\n")
        env = {"PATH": "/usr/bin:/bin", "HOME": tmp, "TMPDIR": tmp, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
        cmd = [*_sandbox_prefix(tmp), sys.executable, "-I", prog]
        # Output goes to a file, not a pipe: a background child holding a pipe open would otherwise keep us
        # waiting after the program itself has finished.
        with open(os.path.join(tmp, "output.txt"), "w+b") as out:
            proc = subprocess.Popen(
                cmd,
                cwd=tmp,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                rc: int | None = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                rc = None
            _kill_group(proc)  # the program on timeout, and anything it left running in its group
            proc.wait()
            out.seek(0)
            tail = _tail(out.read())
        if rc is None:
            return ExecResult(False, "timeout", None, tail)
        return ExecResult(rc == 0, "passed" if rc == 0 else "failed", rc, tail)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _tail(out: bytes | None, limit: int = 2000) -> str:
    return (out or b"")[-limit:].decode("utf-8", errors="replace")
