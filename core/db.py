"""The run store's database connection: SQLite (default) or PostgreSQL (``LAB_DB_URL``).

``core.store`` writes its SQL once, in SQLite's dialect (``?`` placeholders, ``BEGIN
IMMEDIATE``, ``AUTOINCREMENT``, ``REAL``); on PostgreSQL :class:`PgConnection` translates it
on the way through, so every query (and any added later) runs on both:

    ?                               -> %s
    BEGIN IMMEDIATE                 -> BEGIN + pg_advisory_xact_lock(lab): writers that
                                       SQLite serializes are serialized here too, so a claim
                                       (count running, pick the oldest queued) stays atomic
    INTEGER PRIMARY KEY AUTOINCREMENT -> BIGSERIAL PRIMARY KEY
    REAL, BLOB                      -> DOUBLE PRECISION, BYTEA
    INSERT OR IGNORE                -> INSERT ... ON CONFLICT DO NOTHING
    ALTER TABLE ... ADD COLUMN      -> ADD COLUMN IF NOT EXISTS
    PRAGMA integrity_check          -> 'ok' when the server answers
    a NaN parameter                 -> NULL (what SQLite stores for NaN)

A write that finds the server gone (restarted, network blip) reconnects and retries for up to
``LAB_DB_RETRY_S`` seconds (default 30) when it can do so safely: a statement outside a
transaction, or the start of one. psycopg is imported only when ``LAB_DB_URL`` is set.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

SCHEMES = ("postgresql://", "postgres://")
LOCK_KEY = 0x4C53544D  # "LSTM": the advisory lock that stands in for SQLite's write lock
DEFAULT_RETRY_S = 30.0

_TYPES = [(re.compile(r"INTEGER PRIMARY KEY AUTOINCREMENT", re.I), "BIGSERIAL PRIMARY KEY"),
          (re.compile(r"\bREAL\b", re.I), "DOUBLE PRECISION"),
          (re.compile(r"\bBLOB\b", re.I), "BYTEA"),
          # migrations: re-running one is a no-op on both (SQLite's caller catches the error)
          (re.compile(r"\bADD COLUMN (?!IF NOT EXISTS)", re.I), "ADD COLUMN IF NOT EXISTS ")]
_INSERT_OR_IGNORE = re.compile(r"^\s*INSERT OR IGNORE INTO", re.I)


def url() -> str | None:
    """The PostgreSQL URL from LAB_DB_URL, or None for the SQLite file in LAB_HOME."""
    value = os.environ.get("LAB_DB_URL", "").strip()
    if not value:
        return None
    if not value.startswith(SCHEMES):
        raise ValueError(f"LAB_DB_URL must start with postgresql:// (got {value[:20]!r}...)")
    return value


_patience: list[float] = []  # a longer window for the current block (see ``patience``)


@contextmanager
def patience(seconds: float) -> Iterator[None]:
    """Retry this block's writes for ``seconds`` (a worker's final status must land)."""
    _patience.append(seconds)
    try:
        yield
    finally:
        _patience.pop()


def retry_window() -> float:
    if _patience:
        return _patience[-1]
    try:
        return float(os.environ.get("LAB_DB_RETRY_S", DEFAULT_RETRY_S))
    except ValueError:
        return DEFAULT_RETRY_S


def translate(sql: str) -> str:
    """SQLite's dialect as written in core.store -> PostgreSQL's."""
    for pattern, repl in _TYPES:
        sql = pattern.sub(repl, sql)
    if _INSERT_OR_IGNORE.match(sql):
        sql = _INSERT_OR_IGNORE.sub("INSERT INTO", sql).rstrip().rstrip(";") + " ON CONFLICT DO NOTHING"
    return sql.replace("?", "%s")


def _param(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


class Row:
    """A result row read like sqlite3.Row: by position, by column name, and ``dict(row)``."""

    __slots__ = ("_names", "_values")

    def __init__(self, names: list[str], values: tuple):
        self._names, self._values = names, values

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, str):
            return self._values[self._names.index(key)]
        return self._values[key]

    def keys(self) -> list[str]:
        return list(self._names)

    def __len__(self) -> int:
        return len(self._values)


def _row_factory(cursor):
    names = [c.name for c in cursor.description or []]
    return lambda values: Row(names, values)


class PgConnection:
    """A psycopg 3 connection behind sqlite3.Connection's few methods the store uses."""

    dialect = "postgresql"

    def __init__(self, dsn: str):
        self.dsn = dsn
        self.in_tx = False
        self._conn = None
        self._connect()

    def _connect(self) -> None:
        import psycopg

        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001 - a broken connection may fail to close
                pass
        self._conn = psycopg.connect(self.dsn, autocommit=True, row_factory=_row_factory,
                                     connect_timeout=5)

    def _connect_later(self) -> None:
        """Drop the connection; the next attempt opens a new one."""
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001 - a broken connection may fail to close
                pass

    @property
    def broken(self) -> bool:
        return self._conn is None or self._conn.closed or self._conn.broken

    def _retrying(self, fn):
        """Run ``fn`` (one statement outside a transaction, or BEGIN), reconnecting while the
        server is unreachable, up to the retry window; then the last error is raised."""
        import psycopg

        deadline, pause = time.monotonic() + retry_window(), 0.1
        while True:
            try:
                if self.broken:
                    self._connect()
                return fn()
            except psycopg.OperationalError as exc:
                # 08: connection exception, 57: shutdown/restart; others are real errors
                lost = self.broken or (getattr(exc, "sqlstate", None) or "")[:2] in ("08", "57")
                if not lost or time.monotonic() > deadline:
                    raise
                self.in_tx = False
                self._connect_later()
                time.sleep(pause)
                pause = min(pause * 2, 1.0)

    def execute(self, sql: str, args: tuple | list = ()):
        head = sql.strip().upper()
        if head.startswith("PRAGMA"):
            return self._pragma(head)
        if head.startswith("BEGIN"):
            def begin():
                self._conn.execute("BEGIN")
                if "IMMEDIATE" in head:
                    self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            self._retrying(begin)
            self.in_tx = True
            return None
        if head in ("COMMIT", "ROLLBACK"):
            self.in_tx = False
            if self.broken:
                if head == "ROLLBACK":
                    return None  # the server dropped the transaction with the connection
                raise _lost()
            return self._conn.execute(head)
        params = [_param(a) for a in args]
        run = lambda: self._conn.execute(translate(sql), params)  # noqa: E731
        return run() if self.in_tx else self._retrying(run)

    def executemany(self, sql: str, rows: list[tuple]):
        data = [[_param(a) for a in r] for r in rows]

        def run():
            with self._conn.cursor() as cur:
                cur.executemany(translate(sql), data)
                return cur
        return run() if self.in_tx else self._retrying(run)

    def executescript(self, script: str) -> None:
        """The schema, under the lab's lock: concurrent CREATE ... IF NOT EXISTS can collide."""
        self.execute("BEGIN IMMEDIATE")
        try:
            for statement in script.split(";"):
                if statement.strip():
                    self._conn.execute(translate(statement))
        except BaseException:
            self.execute("ROLLBACK")
            raise
        self.execute("COMMIT")

    def _pragma(self, head: str):
        if "INTEGRITY_CHECK" in head:
            return self._retrying(lambda: self._conn.execute("SELECT 'ok'"))
        raise ValueError(f"no PostgreSQL equivalent for {head}")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def _lost() -> Exception:
    import psycopg

    return psycopg.OperationalError("the connection to the run store's PostgreSQL server "
                                    "was lost during a transaction")


def connect_postgres(dsn: str) -> PgConnection:
    return PgConnection(dsn)


def is_lost_connection(exc: BaseException) -> bool:
    """Did this error come from an unreachable PostgreSQL server (for failure messages)?"""
    mod = type(exc).__module__ or ""
    return mod.startswith("psycopg") and type(exc).__name__ == "OperationalError"
