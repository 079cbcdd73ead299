"""The results store: an embedded SQLite file holding every (variant, suite) result of every sweep.

A result row is keyed by a stable hash of everything that determines it — the checkpoints' content identities,
the merge method and parameters, the suite's key (name, version, content hash) and the generation settings — so
a re-run reuses it and a killed sweep resumes with nothing recomputed. Each row is committed the moment it is
written (WAL journal), so a kill loses at most the result being computed. A sweep table links a sweep spec to
its points, in order, with each point's aggregate scores, for export to CSV and JSON.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from engine.errors import StoreError
from engine.fs import chmod_like_umask, os_errors

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,           -- stable_hash(variant identity, suite key, settings)
    variant TEXT NOT NULL,          -- stable_hash(variant identity)
    suite TEXT NOT NULL,            -- the suite's key (name@version:content-hash)
    payload TEXT NOT NULL,          -- JSON: score, per-item outcomes, replies
    timings TEXT NOT NULL,          -- JSON: swap_s, generate_s, score_s (of the run that computed it)
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sweeps (
    id TEXT PRIMARY KEY,            -- stable_hash(spec)
    spec TEXT NOT NULL,             -- JSON of the sweep spec
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sweep_points (
    sweep TEXT NOT NULL REFERENCES sweeps(id),
    idx INTEGER NOT NULL,
    label TEXT NOT NULL,
    kind TEXT NOT NULL,             -- variant | reference
    weights TEXT NOT NULL,          -- JSON list of floats (empty for references)
    variant TEXT NOT NULL,
    result_keys TEXT NOT NULL,      -- JSON {suite key: result key}
    scores TEXT,                    -- JSON aggregate scores once the point is complete
    timings TEXT,
    PRIMARY KEY (sweep, label)
);
"""


def stable_hash(value: Any) -> str:
    """Hash of a JSON-able value that does not depend on dict order or float repr quirks of the caller."""
    blob = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=_json_default)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "to_dict"):
        return value.to_dict()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=_json_default)


def result_key(variant_identity: Mapping[str, Any], suite_key: str, settings: Mapping[str, Any]) -> str:
    """The key of one (variant, suite) result."""
    return stable_hash({"variant": variant_identity, "suite": suite_key, "settings": settings})


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a file through a temporary sibling and a rename, so readers never see half a file."""
    path = Path(path)
    with os_errors("cannot write", path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
                handle.write(text)
            chmod_like_umask(tmp, folder=False)  # mkstemp's 0600 would hide an export from other accounts
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return path


class ResultStore:
    """One SQLite file. Safe to open from several processes (WAL); each write commits at once."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        with os_errors("results store", self.path.parent):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_dir():
            raise StoreError(f"results store {self.path}: is a folder; give a file name such as results.db")
        # SQLite's side files that opening creates: removed again if an existing store turns out unusable. A store
        # that did not exist may be being created by another process at this very moment: its files are not ours
        # to remove.
        existed = self.path.exists()
        sides = [self.path.with_name(self.path.name + s) for s in ("-wal", "-shm", "-journal")]
        fresh = [p for p in sides if not p.exists()] if existed else []
        try:
            self._open_retrying()
        except BaseException:
            with contextlib.suppress(Exception):
                self._db.close()
            for p in fresh:
                with contextlib.suppress(OSError):
                    p.unlink()
            raise

    def _open_retrying(self, attempts: int = 6) -> None:
        """`_open`, retried while another process holds the file mid-creation (switching a new file to WAL takes
        an exclusive lock that SQLite's busy timeout does not always wait for)."""
        for attempt in range(attempts):
            try:
                return self._open()
            except StoreError as exc:
                transient = isinstance(exc.__cause__, sqlite3.OperationalError) and any(
                    word in str(exc.__cause__).lower() for word in ("locked", "busy", "disk i/o")
                )
                if not transient or attempt == attempts - 1:
                    raise
                with contextlib.suppress(Exception):
                    self._db.close()
                time.sleep(0.05 * 2**attempt)  # back off: the other opener finishes within milliseconds

    def _open(self) -> None:
        try:
            # isolation_level=None: autocommit; every statement (or explicit transaction) is durable at once.
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            # OR IGNORE: two processes opening a new store at once must not collide on this row.
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            row = self._db.execute("SELECT value FROM meta WHERE name='schema'").fetchone()
            self._check_schema(row["value"])
            # A truncated or damaged file can open fine and fail on the first page read: find out now.
            check = self._db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"integrity check: {check}")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"results store {self.path}: {_describe_sqlite(exc)}") from exc

    def _check_schema(self, value: str) -> None:
        try:
            version = int(value)
        except ValueError:
            raise StoreError(f"results store {self.path}: unreadable schema version {value!r}") from None
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"results store {self.path}: written by a newer mergescope (schema {version}; this version reads "
                f"{SCHEMA_VERSION}); upgrade mergescope or use another --store"
            )
        if version != SCHEMA_VERSION:
            raise StoreError(f"results store {self.path}: schema {version}, this version reads {SCHEMA_VERSION}")

    # --- results -----------------------------------------------------------------------------------------------
    def get(self, key: str) -> dict[str, Any] | None:
        """The stored payload of a result (with its `timings`), or None."""
        row = self._query_one("SELECT payload, timings FROM results WHERE key=?", (key,))
        if row is None:
            return None
        return {"payload": json.loads(row["payload"]), "timings": json.loads(row["timings"])}

    def put(
        self,
        key: str,
        *,
        variant: str,
        suite: str,
        payload: Mapping[str, Any],
        timings: Mapping[str, float],
    ) -> None:
        """Store one (variant, suite) result; committed before this returns."""
        self._execute(
            "INSERT OR REPLACE INTO results (key, variant, suite, payload, timings, created) VALUES (?,?,?,?,?,?)",
            (key, variant, suite, _dumps(payload), _dumps(timings), time.time()),
        )

    def count_results(self) -> int:
        return int(self._query_one("SELECT COUNT(*) AS n FROM results", ())["n"])

    # --- sweeps ------------------------------------------------------------------------------------------------
    def begin_sweep(self, spec: Mapping[str, Any]) -> str:
        """Register a sweep spec (idempotent: the same spec gets the same id) and return its id."""
        sweep_id = stable_hash(spec)[:16]
        now = time.time()
        self._execute(
            "INSERT INTO sweeps (id, spec, created, updated) VALUES (?,?,?,?) "
            "ON CONFLICT(id) DO UPDATE SET updated=excluded.updated",
            (sweep_id, _dumps(spec), now, now),
        )
        return sweep_id

    def record_point(
        self,
        sweep_id: str,
        idx: int,
        *,
        label: str,
        kind: str,
        weights: Iterable[float],
        variant: str,
        result_keys: Mapping[str, str],
        scores: Mapping[str, Any] | None,
        timings: Mapping[str, float] | None,
    ) -> None:
        self._execute(
            "INSERT OR REPLACE INTO sweep_points (sweep, idx, label, kind, weights, variant, result_keys, scores, "
            "timings) VALUES (?,?,?,?,?,?,?,?,?)",
            (
                sweep_id,
                idx,
                label,
                kind,
                _dumps(list(weights)),
                variant,
                _dumps(dict(result_keys)),
                None if scores is None else _dumps(scores),
                None if timings is None else _dumps(timings),
            ),
        )
        self._execute("UPDATE sweeps SET updated=? WHERE id=?", (time.time(), sweep_id))

    def sweeps(self) -> list[dict[str, Any]]:
        rows = self._query("SELECT id, spec, created, updated FROM sweeps ORDER BY updated DESC", ())
        return [
            {"id": r["id"], "spec": json.loads(r["spec"]), "created": r["created"], "updated": r["updated"]}
            for r in rows
        ]

    def resolve_sweep(self, sweep_id: str | None = None) -> str:
        """`sweep_id` itself if known (a unique prefix works too); None: the most recently updated sweep."""
        known = [s["id"] for s in self.sweeps()]
        if not known:
            raise StoreError(f"results store {self.path}: no sweeps in it")
        if sweep_id is None:
            return known[0]
        matches = [k for k in known if k.startswith(sweep_id)]
        if len(matches) != 1:
            raise StoreError(
                f"results store {self.path}: no single sweep matches id {sweep_id!r} (known: {known})"
            )
        return matches[0]

    def sweep_points(self, sweep_id: str) -> list[dict[str, Any]]:
        """The points of a sweep in order, each with its per-suite results (payloads) where stored."""
        rows = self._query("SELECT * FROM sweep_points WHERE sweep=? ORDER BY idx", (sweep_id,))
        points = []
        for r in rows:
            keys = json.loads(r["result_keys"])
            suites = {}
            for suite, key in keys.items():
                stored = self.get(key)
                if stored is not None:
                    suites[suite] = stored
            points.append(
                {
                    "idx": r["idx"],
                    "label": r["label"],
                    "kind": r["kind"],
                    "weights": json.loads(r["weights"]),
                    "variant": r["variant"],
                    "scores": None if r["scores"] is None else json.loads(r["scores"]),
                    "timings": None if r["timings"] is None else json.loads(r["timings"]),
                    "suites": suites,
                }
            )
        return points

    # --- export ------------------------------------------------------------------------------------------------
    def export_json(self, sweep_id: str, path: str | os.PathLike) -> Path:
        """Everything about one sweep: its spec and every point with per-suite scores, per-item outcomes, replies."""
        spec = next(s for s in self.sweeps() if s["id"] == sweep_id)
        document = {"sweep": sweep_id, "spec": spec["spec"], "points": self.sweep_points(sweep_id)}
        return atomic_write_text(
            path, json.dumps(document, indent=2, ensure_ascii=False, default=_json_default) + "\n"
        )

    def export_csv(self, sweep_id: str, path: str | os.PathLike) -> Path:
        """One row per point: label, kind, weights, then each aggregate score with its interval and item count."""
        return atomic_write_text(path, points_to_csv(self.sweep_points(sweep_id)))

    # --- plumbing ----------------------------------------------------------------------------------------------
    def _execute(self, sql: str, params: tuple) -> None:
        try:
            self._db.execute(sql, params)
        except sqlite3.Error as exc:
            raise StoreError(f"results store {self.path}: write failed: {_describe_sqlite(exc)}") from exc

    def _query(self, sql: str, params: tuple) -> list[sqlite3.Row]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"results store {self.path}: read failed: {_describe_sqlite(exc)}") from exc

    def _query_one(self, sql: str, params: tuple) -> sqlite3.Row | None:
        rows = self._query(sql, params)
        return rows[0] if rows else None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _describe_sqlite(exc: sqlite3.Error) -> str:
    """What an SQLite failure means for the user (its own text names no file and no remedy)."""
    text = str(exc)
    lowered = text.lower()
    if "readonly" in lowered or "read-only" in lowered:
        return f"cannot write to it: read-only file or file system ({text}); use another --store"
    if "not a database" in lowered or "malformed" in lowered or "integrity check" in lowered:
        return f"not a readable SQLite results store: corrupt or truncated ({text}); move it away or use another --store"
    if "locked" in lowered or "busy" in lowered:
        return f"another process holds it locked for too long ({text}); try again"
    if "unable to open" in lowered:
        return f"cannot open the file ({text}); check the folder exists and is writable"
    if "disk is full" in lowered or "full" in lowered:
        return f"no space left on the device ({text})"
    return f"SQLite error ({text})"


def points_to_csv(points: list[dict[str, Any]]) -> str:
    """Wide CSV of sweep points; score columns are the union over points, in first-seen order."""
    score_names: list[str] = []
    n_weights = max((len(p["weights"]) for p in points), default=0)
    for p in points:
        for name in (p.get("scores") or {}).get("aggregates", {}):
            if name not in score_names:
                score_names.append(name)
    header = ["label", "kind"] + [f"w{i + 1}" for i in range(n_weights)]
    for name in score_names:
        header += [name, f"{name}_lo", f"{name}_hi", f"{name}_n"]
    header += ["heuristic", "swap_s", "generate_s", "score_s"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for p in points:
        scores = p.get("scores") or {}
        aggregates = scores.get("aggregates", {})
        weights = list(p["weights"]) + [""] * (n_weights - len(p["weights"]))
        row: list[Any] = [p["label"], p["kind"], *weights]
        for name in score_names:
            s = aggregates.get(name)
            row += ["", "", "", ""] if s is None else [s["value"], s["lo"], s["hi"], s["n"]]
        timings = p.get("timings") or {}
        row += [
            "yes" if scores.get("heuristic") else "",
            *(f"{timings[k]:.3f}" if k in timings else "" for k in ("swap_s", "generate_s", "score_s")),
        ]
        writer.writerow(row)
    return out.getvalue()
