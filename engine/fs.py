"""File-system edges shared by every writer: OS failures as named errors, the output-folder lock, stale
temporary folders, the user's umask, and the rule that an output never is or contains an input.

Each writer (merge export, store, CSV/JSON export) goes through these, so a read-only disk, a full disk or a
symlink loop reads the same everywhere: `error: <what> <path>: <reason>`, exit 2.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

from engine.errors import FileSystemError, MergeError, MergescopeWarning

# errno -> what the user should understand (the OS's own text is terse and sometimes misleading).
_REASONS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.ELOOP: "too many levels of symbolic links (a symlink loop)",
    errno.ENAMETOOLONG: "file name too long",
    errno.ENOTDIR: "a component of the path is not a folder",
    errno.EISDIR: "is a folder, not a file",
    errno.EEXIST: "already exists",
    errno.ENOENT: "no such file or folder",
    errno.EIO: "input/output error",
    errno.EMFILE: "too many open files",
}


def describe_os_error(exc: BaseException, path: str | os.PathLike | None = None) -> str:
    """`<path>: <reason> (errno name)` for an OSError, or for the RuntimeError Python 3.11's Path.resolve raises
    on a symlink loop."""
    if isinstance(exc, OSError):
        where = exc.filename if exc.filename is not None else path
        reason = _REASONS.get(exc.errno or 0) or exc.strerror or str(exc)
        code = errno.errorcode.get(exc.errno or 0)
        text = reason + (f" ({code})" if code else "")
        return text if where is None else f"{where}: {text}"
    return f"{path}: {_REASONS[errno.ELOOP]} ({exc})"


def _is_loop(exc: BaseException) -> bool:
    return isinstance(exc, RuntimeError) and "symlink loop" in str(exc).lower()


@contextlib.contextmanager
def os_errors(what: str, path: str | os.PathLike | None = None) -> Iterator[None]:
    """Turn OS-level failures inside the block into `FileSystemError("<what> <path>: <reason>")`."""
    try:
        yield
    except OSError as exc:
        raise FileSystemError(f"{what} {describe_os_error(exc, path)}") from exc
    except RuntimeError as exc:
        if not _is_loop(exc):
            raise
        raise FileSystemError(f"{what} {describe_os_error(exc, path)}") from exc


def resolve(path: str | os.PathLike, what: str = "path") -> Path:
    """Path.resolve() with a symlink loop (RuntimeError on 3.11, OSError later) as a named error."""
    with os_errors(what, path):
        return Path(path).expanduser().resolve()


# --- umask --------------------------------------------------------------------------------------------------------
def current_umask() -> int:
    """The process umask (read from /proc where possible: setting it to read it back races with threads)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def chmod_like_umask(path: str | os.PathLike, *, folder: bool) -> None:
    """Give a file made by mkstemp/mkdtemp (always 0600/0700) the mode an ordinary create would have, so another
    account (a serving user) can read what we wrote when the umask allows it."""
    os.chmod(path, (0o777 if folder else 0o666) & ~current_umask())


# --- the output lock ------------------------------------------------------------------------------------------------
def lock_path(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.lock")


class OutputLock:
    """An exclusive, non-blocking lock on one output folder (a `.NAME.lock` file beside it, removed on release):
    of two writers to the same folder exactly one proceeds; the other gets a MergeError at once. The lock dies
    with its process (flock), so a killed run never leaves a stuck lock."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.path = lock_path(dest)
        self.fd: int | None = None

    def __enter__(self) -> OutputLock:
        while True:
            with os_errors(f"cannot write the output folder {self.dest}:", self.path):
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                raise MergeError(
                    f"{self.dest}: another merge is writing this folder right now"
                    + (f" (process {holder})" if holder else "")
                    + f"; wait for it to finish or choose another --out (lock: {self.path})"
                ) from None
            # The previous holder may have unlinked the file between our open and flock: then lock the new one.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)  # unlink before unlocking: a waiter re-checks the inode
            os.close(self.fd)
            self.fd = None


def _read_pid(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    return None


# --- stale temporary folders -----------------------------------------------------------------------------------------
def temp_prefix(dest: Path) -> str:
    return f".{dest.name}.tmp-"


def trash_prefix(dest: Path) -> str:
    return f".{dest.name}.old-"


def remove_stale_temps(dest: Path) -> list[Path]:
    """Remove the temporary folders an interrupted (killed) writer of `dest` left beside it, with a warning each.
    Call only while holding `OutputLock(dest)`: then no live writer owns them."""
    removed = []
    with contextlib.suppress(OSError):
        for entry in dest.parent.iterdir():
            if entry.name.startswith((temp_prefix(dest), trash_prefix(dest))) and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
                warnings.warn(
                    f"removed {entry}, a temporary folder left by an interrupted earlier run", MergescopeWarning,
                    stacklevel=2,
                )
    return removed


# --- outputs vs inputs ------------------------------------------------------------------------------------------------
def check_output_not_input(out: Path, inputs: Iterable[str | os.PathLike], *, flag: str = "--out") -> None:
    """Refuse an output folder that is one of the inputs or contains one: replacing it (with --overwrite) would
    delete a model the merge is still reading."""
    out = resolve(out, flag)
    for ref in inputs:
        path = Path(ref).expanduser()
        if not path.exists():
            continue  # a hub id: lives in the cache, never under --out
        src = resolve(path, "input")
        if src == out or out in src.parents:
            what = "is" if src == out else "contains"
            raise MergeError(f"{flag} {out}: the output folder {what} the input model {ref}; choose another folder")
