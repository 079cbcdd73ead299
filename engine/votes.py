"""Blind pairwise votes, kept in the results store's SQLite file (a table of their own, so the results schema is
untouched): which two variants of which sweep answered which prompt, both replies, the order they were shown in,
and the verdict. Exported as JSONL."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from engine.bradley_terry import VERDICTS
from engine.errors import StoreError
from engine.store import atomic_write_text

_SCHEMA = """
CREATE TABLE IF NOT EXISTS votes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sweep TEXT NOT NULL,
    prompt TEXT NOT NULL,
    variant_a TEXT NOT NULL,        -- the point label shown as "A"
    variant_b TEXT NOT NULL,        -- the point label shown as "B"
    reply_a TEXT NOT NULL,
    reply_b TEXT NOT NULL,
    verdict TEXT NOT NULL,          -- A | B | tie | both_bad
    created REAL NOT NULL
);
"""


class VoteStore:
    """The votes table of a results store file."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            self._db.row_factory = sqlite3.Row
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"results store {self.path}: cannot open the votes table ({exc})") from exc

    def add(
        self,
        sweep: str,
        prompt: str,
        variant_a: str,
        variant_b: str,
        reply_a: str,
        reply_b: str,
        verdict: str,
    ) -> int:
        if verdict not in VERDICTS:
            raise StoreError(f"vote: unknown verdict {verdict!r} (expected one of {', '.join(VERDICTS)})")
        if variant_a == variant_b:
            raise StoreError(f"vote: both sides are {variant_a!r}; a vote compares two different variants")
        try:
            cur = self._db.execute(
                "INSERT INTO votes (sweep, prompt, variant_a, variant_b, reply_a, reply_b, verdict, created) "
                "VALUES (?,?,?,?,?,?,?,?)",
                (sweep, prompt, variant_a, variant_b, reply_a, reply_b, verdict, time.time()),
            )
        except sqlite3.Error as exc:
            raise StoreError(f"results store {self.path}: vote not written ({exc})") from exc
        return int(cur.lastrowid)

    def votes(self, sweep: str) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT * FROM votes WHERE sweep=? ORDER BY id", (sweep,)).fetchall()
        return [dict(r) for r in rows]

    def export_jsonl(self, sweep: str, path: str | os.PathLike) -> Path:
        lines = [json.dumps(v, ensure_ascii=False) for v in self.votes(sweep)]
        return atomic_write_text(path, "".join(line + "\n" for line in lines))

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> VoteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def vote_triples(votes: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(variant shown as A, variant shown as B, verdict) per vote, for `bradley_terry.strengths`."""
    return [(v["variant_a"], v["variant_b"], v["verdict"]) for v in votes]
