"""Where a batch's grades live: `<out_dir>/grades.sqlite`, written as each notebook finishes.

One row per submission, keyed by `submission_key(path, fingerprint)`: the path as given and the
sha256 of the file's bytes. Grading the same file again gives the same key (so `--resume` skips
it); a changed file gets a new key. Each `record` is its own committed transaction (WAL journal,
synchronous=FULL), so a batch killed with SIGKILL keeps everything recorded before it.

The `meta` table holds the batch's settings as JSON values (the hidden-input seed `run_seed`, the
worker arguments, the timeout, the paths given, ...) so that a resumed batch grades the rest
exactly as it graded the first part.

One connection serialised by a lock: one writer thread and any number of reader threads may share
a `ResultStore`; other processes may read the file at the same time (WAL).
"""

from __future__ import annotations

import datetime
import json
import os
import sqlite3
import threading
from pathlib import Path

FILENAME = "grades.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    path TEXT NOT NULL,
    status TEXT,
    result TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


def submission_key(path: str | os.PathLike, fingerprint: str) -> str:
    """The store's key of one submission: its path as given and the sha256 of its bytes (or, for
    a file that was not read, a description such as ``missing``)."""
    return f"{os.fspath(path)}#{fingerprint}"


def store_path(out_dir: str | os.PathLike) -> Path:
    return Path(out_dir) / FILENAME


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


class ResultStore:
    """The results of one batch in `<out_dir>/grades.sqlite` (created unless `create=False`)."""

    def __init__(self, out_dir: str | os.PathLike, *, create: bool = True):
        self.path = store_path(out_dir)
        if not create and not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no results here")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                     check_same_thread=False)
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.executescript(SCHEMA)

    # -- results ---------------------------------------------------------------------------------
    def record(self, key: str, path: str | os.PathLike, result: dict) -> None:
        """Store (or replace) the result of one submission, committed before returning."""
        text = json.dumps(result, sort_keys=True)
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute(
                    "INSERT INTO results (key, path, status, result, recorded_at) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET path=excluded.path, "
                    "status=excluded.status, result=excluded.result, "
                    "recorded_at=excluded.recorded_at",
                    (key, os.fspath(path), result.get("status"), text, _now()))
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def get(self, key: str) -> dict | None:
        with self._lock:
            row = self._conn.execute("SELECT result FROM results WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def done_keys(self) -> set[str]:
        with self._lock:
            return {k for (k,) in self._conn.execute("SELECT key FROM results")}

    def failed_keys(self) -> set[str]:
        with self._lock:
            return {k for (k,) in self._conn.execute(
                "SELECT key FROM results WHERE status IS NOT 'ok'")}

    def all(self) -> list[dict]:
        """Every result, in the order they were first recorded."""
        with self._lock:
            rows = self._conn.execute("SELECT result FROM results ORDER BY seq").fetchall()
        return [json.loads(r) for (r,) in rows]

    def __len__(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT count(*) FROM results").fetchone()[0]

    # -- settings --------------------------------------------------------------------------------
    def set_meta(self, **values) -> None:
        """Store settings (JSON values) in one transaction."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "INSERT INTO meta (name, value) VALUES (?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET value=excluded.value",
                    [(k, json.dumps(v)) for k, v in values.items()])
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def meta(self) -> dict:
        with self._lock:
            rows = self._conn.execute("SELECT name, value FROM meta").fetchall()
        return {k: json.loads(v) for k, v in rows}

    # -- life cycle ------------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                except sqlite3.Error:
                    pass  # another process is reading: the WAL is folded in later
                self._conn.close()
                self._conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def set_aside(out_dir: str | os.PathLike) -> Path | None:
    """Move an existing store out of the way (never deleted): returns the new name, or None."""
    path = store_path(out_dir)
    if not path.exists():
        return None
    ResultStore(out_dir).close()  # folds the WAL into the main file
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{FILENAME}.{stamp}.bak")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{FILENAME}.{stamp}-{n}.bak")
    path.rename(target)
    for suffix in ("-wal", "-shm"):  # usually gone after the checkpoint; kept with the copy if not
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.rename(target.with_name(target.name + suffix))
    return target
