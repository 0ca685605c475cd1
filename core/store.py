"""The run store: one SQLite file (WAL) or a PostgreSQL database (``LAB_DB_URL``, see
core.db), plus a folder per run for its model and encoder (``LAB_ARTIFACTS``, default
``LAB_HOME/runs``). On PostgreSQL a finished run's files are also kept in the database
(``publish``), so a web server on any machine loads them (``artifact``).

Statuses, in the spirit of sacred's observers::

    queued -> running -> completed | failed | cancelled | diverged | interrupted

``interrupted`` is set by whoever looks next when a running run's worker is gone (its pid
is dead, or for a worker on another host its heartbeat is stale). Metrics are rows
(run, step, epoch, phase, name, value, time) written in small transactions, so a killed
worker loses nothing already written.

A run may belong to a *group* (``group_id``, ``group_label``): the runs of one configuration
over several seeds, queued together by ``jobs.submit_group`` or ``python -m core
reproduce``. The store only records the group; core/groups.py makes and reads it.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import secrets
import shutil
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from core import access, fairq, paths
from core import db as dbapi
from core.config import ConfigError, TrainConfig, load_config

QUEUED, RUNNING = "queued", "running"
COMPLETED, FAILED, CANCELLED, DIVERGED, INTERRUPTED = (
    "completed", "failed", "cancelled", "diverged", "interrupted")
ACTIVE = (QUEUED, RUNNING)
FINAL = (COMPLETED, FAILED, CANCELLED, DIVERGED, INTERRUPTED)

HEARTBEAT_S = 1.0  # a worker's heartbeat period
STALE_S = 30.0  # heartbeat age that marks a worker dead when its pid cannot be checked
BUSY_TIMEOUT_MS = 30_000  # writers wait this long for the lock instead of failing
MODEL_FILE = "model.keras"
PARTIAL_MODEL_FILE = "model.partial.keras"
ENCODER_FILE = "encoder.json"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    name TEXT NOT NULL,
    architecture TEXT NOT NULL,
    config TEXT NOT NULL,
    probes TEXT NOT NULL DEFAULT '[]',
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    ended_at REAL,
    heartbeat_at REAL,
    pid INTEGER,
    pid_started REAL,
    host TEXT,
    progress TEXT NOT NULL DEFAULT '{}',
    results TEXT NOT NULL DEFAULT '{}',
    env TEXT NOT NULL DEFAULT '{}',
    error TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status, seq);
CREATE TABLE IF NOT EXISTS users (
    token TEXT PRIMARY KEY,
    nickname TEXT NOT NULL,
    nick_key TEXT NOT NULL,
    class_gen INTEGER NOT NULL,
    created_at REAL NOT NULL,
    instructor_key TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS users_nick ON users(class_gen, nick_key);
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS metrics (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    phase TEXT NOT NULL,
    name TEXT NOT NULL,
    value REAL,
    t REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS metrics_run ON metrics(run_id, phase, id);
CREATE TABLE IF NOT EXISTS artifacts (
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (run_id, name)
);
"""
# Classroom columns, added to stores made before them (old runs: no owner, not archived).
_ADDED_COLUMNS = {
    "owner": "TEXT",
    "archived": "INTEGER NOT NULL DEFAULT 0",
    "reused_from": "TEXT",
    "reuse_key": "TEXT",
    # Seed groups (core/groups.py): old runs belong to none.
    "group_id": "TEXT",
    "group_label": "TEXT",
}


class QueueFull(ConfigError):
    """An owner already has the most queued runs allowed (LAB_MAX_QUEUED_PER_USER), or a
    group of ``adding`` runs would pass it."""

    def __init__(self, owner: str, waiting: int, cap: int, adding: int = 1):
        if adding == 1:
            super().__init__([f"queue: {owner} already has {waiting} runs waiting, the most "
                              f"allowed per person (LAB_MAX_QUEUED_PER_USER={cap}); wait for "
                              "one to start or stop one"])
            return
        super().__init__([f"queue: {adding} more runs would give {owner} {waiting + adding} "
                          f"waiting, over the most allowed per person (LAB_MAX_QUEUED_PER_USER"
                          f"={cap}); {owner} may queue {max(0, cap - waiting)} more now: "
                          "choose fewer seeds, or wait for queued runs to start"])


class RunNotFound(KeyError):
    def __init__(self, run_id: str):
        super().__init__(run_id)
        self.run_id = run_id

    def __str__(self) -> str:
        return f"no run with id {self.run_id!r} (see `python -m core runs`)"


@dataclass
class Run:
    id: str
    seq: int
    name: str
    architecture: str
    config: TrainConfig
    probes: list[str]
    status: str
    created_at: float
    started_at: float | None
    ended_at: float | None
    heartbeat_at: float | None
    pid: int | None
    pid_started: float | None
    host: str | None
    progress: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    cancel_requested: bool = False
    owner: str | None = None
    archived: bool = False
    reused_from: str | None = None
    reuse_key: str | None = None
    group_id: str | None = None
    group_label: str | None = None

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def duration(self) -> float | None:
        if self.started_at is None:
            return None
        return (self.ended_at or time.time()) - self.started_at


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def new_run_id() -> str:
    """Sortable by creation time, unique across processes."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def worker_alive(pid: int | None, pid_started: float | None, host: str | None,
                 heartbeat_at: float | None, now: float | None = None) -> bool:
    """Is the worker of a running run still there? The pid (with its start time, so a
    recycled pid does not count) on this host; otherwise the heartbeat's age."""
    now = now or time.time()
    if pid and host == socket.gethostname():
        try:
            proc = psutil.Process(pid)
            if pid_started is not None and abs(proc.create_time() - pid_started) > 1.0:
                return False
            return proc.status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False
    return heartbeat_at is not None and now - heartbeat_at < STALE_S


POOL_IDLE_MAX = 8  # idle connections a process keeps for its next threads


class _Pool:
    """Idle connections of one process (appends and pops are atomic)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.idle: collections.deque = collections.deque()

    def close_all(self) -> None:
        while self.idle:
            with contextlib.suppress(Exception):
                self.idle.pop().close()


class _Lease:
    """A connection held by one thread; back in the pool when the thread (and with it the
    thread-local holding this lease) is gone."""

    def __init__(self, pool: _Pool, connect) -> None:
        self.pool, self.pid = pool, os.getpid()
        try:
            self.conn = pool.idle.pop()
        except IndexError:
            self.conn = connect()

    def release(self, close: bool = False) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        if close or os.getpid() != self.pid or len(self.pool.idle) >= POOL_IDLE_MAX \
                or getattr(conn, "in_transaction", False) or getattr(conn, "in_tx", False):
            with contextlib.suppress(Exception):
                conn.close()
        else:
            self.pool.idle.append(conn)

    def __del__(self) -> None:
        self.release()


class RunStore:
    """All runs of one LAB_HOME. Safe to use from many threads and processes."""

    def __init__(self, home: Path | str | None = None):
        self.home = Path(home) if home else paths.lab_home()
        self.home.mkdir(parents=True, exist_ok=True)
        self.runs_root = Path(os.environ.get("LAB_ARTIFACTS") or self.home / "runs").expanduser()
        self.runs_root.mkdir(parents=True, exist_ok=True)
        self.db_url = dbapi.url()  # None: the SQLite file below
        self.db_path = self.home / "runs.db"
        self._local = threading.local()
        self._conn().executescript(_SCHEMA)  # idempotent; executescript commits itself
        self._migrate()

    def _migrate(self) -> None:
        """Add the columns a store made by an older version lacks."""
        have = {d[0] for d in self._conn().execute("SELECT * FROM runs LIMIT 0").description}
        for name, decl in _ADDED_COLUMNS.items():
            if name not in have:
                with contextlib.suppress(sqlite3.OperationalError):  # another process did
                    self._conn().execute(f"ALTER TABLE runs ADD COLUMN {name} {decl}")

    # -- connection ------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        """This thread's connection. A web server runs every script and fragment rerun in a
        new thread: a connection (a PostgreSQL backend, or SQLite's open and pragmas) per
        rerun cost more than the queries, so a thread's connection goes back to a pool when
        the thread ends, for the next one."""
        lease = getattr(self._local, "lease", None)
        if lease is None or lease.pid != os.getpid():
            lease = self._local.lease = _Lease(self._pool(), self._connect)
        return lease.conn

    def _pool(self) -> _Pool:
        if getattr(self, "_idle", None) is None or self._idle.pid != os.getpid():
            self._idle = _Pool()  # after a fork: the parent's connections are not ours
        return self._idle

    def _connect(self) -> sqlite3.Connection:
        if self.db_url:
            return dbapi.connect_postgres(self.db_url)
        conn = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_MS / 1000,
                               isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    @contextmanager
    def _tx(self, immediate: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction. IMMEDIATE takes the lock up front, so a busy database waits
        (busy_timeout) instead of failing with "database is locked" on lock upgrade."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        """Close this thread's connection and the idle ones."""
        lease = getattr(self._local, "lease", None)
        if lease is not None:
            self._local.lease = None
            lease.release(close=True)
        if getattr(self, "_idle", None) is not None:
            self._idle.close_all()

    # -- files -----------------------------------------------------------------------------
    def run_dir(self, run_id: str) -> Path:
        if not run_id or "/" in run_id or "\\" in run_id or run_id.startswith("."):
            raise RunNotFound(run_id)
        return self.runs_root / run_id

    def model_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / MODEL_FILE

    def encoder_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / ENCODER_FILE

    # -- runs ------------------------------------------------------------------------------
    def create_run(self, cfg: TrainConfig, probes: Iterable[str] = (), status: str = QUEUED,
                   owner: str | None = None, reuse_key: str | None = None,
                   max_queued: int | None = None, group_id: str | None = None,
                   group_label: str | None = None) -> str:
        """Store a new run. ``max_queued``: refuse (QueueFull) when ``owner`` already has
        that many runs queued; checked in the same transaction as the insert."""
        return self.create_runs([(cfg, reuse_key)], probes, status, owner, max_queued,
                                group_id, group_label)[0]

    def create_runs(self, runs: Iterable[tuple[TrainConfig, str | None]],
                    probes: Iterable[str] = (), status: str = QUEUED, owner: str | None = None,
                    max_queued: int | None = None, group_id: str | None = None,
                    group_label: str | None = None) -> list[str]:
        """Store several runs ((config, reuse key) each) in one transaction: all or none.
        ``max_queued``: refuse (QueueFull) when they would give ``owner`` more queued runs
        than that."""
        runs, probes_json = list(runs), json.dumps(list(probes))
        ids = [new_run_id() for _ in runs]
        with self._tx(immediate=True) as db:
            if max_queued is not None and owner is not None and status == QUEUED:
                waiting = db.execute("SELECT COUNT(*) FROM runs WHERE owner = ? AND status = ?",
                                     (owner, QUEUED)).fetchone()[0]
                if waiting + len(runs) > max_queued:
                    raise QueueFull(owner, waiting, max_queued, len(runs))
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM runs").fetchone()[0]
            for i, (run_id, (cfg, reuse_key)) in enumerate(zip(ids, runs)):
                db.execute(
                    "INSERT INTO runs (id, seq, name, architecture, config, probes, status, "
                    "created_at, owner, reuse_key, group_id, group_label) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (run_id, seq + i, cfg.display_name(), cfg.architecture, cfg.to_json(),
                     probes_json, status, time.time(), owner, reuse_key, group_id, group_label))
        for run_id in ids:
            self.run_dir(run_id).mkdir(parents=True, exist_ok=True)
        return ids

    @staticmethod
    def _row(row: sqlite3.Row) -> Run:
        d = dict(row)
        return Run(
            id=d["id"], seq=d["seq"], name=d["name"], architecture=d["architecture"],
            config=load_config(json.loads(d["config"])), probes=json.loads(d["probes"]),
            status=d["status"], created_at=d["created_at"], started_at=d["started_at"],
            ended_at=d["ended_at"], heartbeat_at=d["heartbeat_at"], pid=d["pid"],
            pid_started=d["pid_started"], host=d["host"], progress=json.loads(d["progress"]),
            results=json.loads(d["results"]), env=json.loads(d["env"]), error=d["error"],
            cancel_requested=bool(d["cancel_requested"]), owner=d["owner"],
            archived=bool(d["archived"]), reused_from=d["reused_from"],
            reuse_key=d["reuse_key"], group_id=d["group_id"], group_label=d["group_label"])

    def get(self, run_id: str, reap: bool = True) -> Run:
        if reap:
            self.reap()
        row = self._conn().execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise RunNotFound(run_id)
        return self._row(row)

    def exists(self, run_id: str) -> bool:
        return self._conn().execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() \
            is not None

    def list_runs(self, statuses: Iterable[str] | None = None, reap: bool = True,
                  archived: bool | None = None) -> list[Run]:
        """Newest first. Looking also marks runs whose worker died as interrupted.
        ``archived``: False = the current class's runs only, True = archived only."""
        if reap:
            self.reap()
        sql, where, args = "SELECT * FROM runs", [], []
        if statuses:
            st = list(statuses)
            where.append(f"status IN ({','.join('?' * len(st))})")
            args += st
        if archived is not None:
            where.append("archived = ?")
            args.append(int(archived))
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._conn().execute(sql + " ORDER BY seq DESC", args).fetchall()
        return [self._row(r) for r in rows]

    def group(self, group_id: str, reap: bool = True) -> list[Run]:
        """A group's runs, in the order they were queued (empty for an unknown group)."""
        if reap:
            self.reap()
        rows = self._conn().execute("SELECT * FROM runs WHERE group_id = ? ORDER BY seq",
                                    (group_id,)).fetchall()
        return [self._row(r) for r in rows]

    @staticmethod
    def _queue_order(db: sqlite3.Connection) -> list[tuple[str, str | None]]:
        """(id, owner) of the queued runs in the fair queue's order (core/fairq.py)."""
        queued = db.execute("SELECT id, owner, seq FROM runs WHERE status = ?",
                            (QUEUED,)).fetchall()
        if not queued:
            return []
        owners = {r["owner"] for r in queued}
        last = {r["owner"]: r["t"] for r in db.execute(
            "SELECT owner, MAX(started_at) AS t FROM runs WHERE started_at IS NOT NULL "
            "GROUP BY owner").fetchall() if r["owner"] in owners}
        order = fairq.fair_order([(r["id"], r["owner"], r["seq"]) for r in queued], last)
        owner_of = {r["id"]: r["owner"] for r in queued}
        return [(run_id, owner_of[run_id]) for run_id in order]

    def queue_order(self) -> list[str]:
        """Queued run ids, next to start first (the fair order)."""
        return [run_id for run_id, _ in self._queue_order(self._conn())]

    def queue_position(self, run_id: str) -> int | None:
        """1 = next to start; None when the run is not queued."""
        order = self.queue_order()
        return order.index(run_id) + 1 if run_id in order else None

    def claim_next(self, max_running: int) -> Run | None:
        """Atomically move the next queued run in the fair order to running if a slot is
        free; an owner (with a name) runs one job at a time."""
        # A plain read first: most looks (every sidebar tick) find nothing queued, and the
        # write lock would make the workers' metric writes wait for nothing.
        if self._conn().execute("SELECT 1 FROM runs WHERE status = ? LIMIT 1",
                                (QUEUED,)).fetchone() is None:
            return None
        with self._tx(immediate=True) as db:
            running = db.execute("SELECT owner FROM runs WHERE status = ?",
                                 (RUNNING,)).fetchall()
            if len(running) >= max_running:
                return None
            busy = {r["owner"] for r in running if r["owner"] is not None}
            run_id = next((rid for rid, owner in self._queue_order(db) if owner not in busy),
                          None)
            if run_id is None:
                return None
            now = time.time()
            db.execute("UPDATE runs SET status = ?, started_at = ?, heartbeat_at = ?, host = ?, "
                       "progress = ? WHERE id = ?",
                       (RUNNING, now, now, socket.gethostname(),
                        json.dumps({"stage": "starting"}), run_id))
        return self.get(run_id, reap=False)

    def set_worker(self, run_id: str, pid: int) -> None:
        try:
            started = psutil.Process(pid).create_time()
        except psutil.NoSuchProcess:
            started = None
        with self._tx() as db:
            db.execute("UPDATE runs SET pid = ?, pid_started = ?, host = ?, heartbeat_at = ? "
                       "WHERE id = ?", (pid, started, socket.gethostname(), time.time(), run_id))

    def heartbeat(self, run_id: str, progress: dict[str, Any] | None = None) -> None:
        with self._tx() as db:
            if progress is None:
                db.execute("UPDATE runs SET heartbeat_at = ? WHERE id = ? AND status = ?",
                           (time.time(), run_id, RUNNING))
            else:
                db.execute("UPDATE runs SET heartbeat_at = ?, progress = ? "
                           "WHERE id = ? AND status = ?",
                           (time.time(), json.dumps(progress), run_id, RUNNING))

    def update_results(self, run_id: str, **values: Any) -> None:
        """Merge keys into the run's results (partial results survive a crash)."""
        with self._tx(immediate=True) as db:
            row = db.execute("SELECT results FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise RunNotFound(run_id)
            results = json.loads(row["results"])
            results.update(values)
            db.execute("UPDATE runs SET results = ? WHERE id = ?", (json.dumps(results), run_id))

    def set_env(self, run_id: str, env: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute("UPDATE runs SET env = ? WHERE id = ?", (json.dumps(env), run_id))

    def finish(self, run_id: str, status: str, error: str | None = None,
               progress: dict[str, Any] | None = None) -> bool:
        """Move a run to a final status; False if it was already final (first one wins)."""
        assert status in FINAL, status
        with self._tx(immediate=True) as db:
            cur = db.execute(
                "UPDATE runs SET status = ?, ended_at = ?, error = COALESCE(?, error), "
                "progress = COALESCE(?, progress) WHERE id = ? AND status IN (?, ?)",
                (status, time.time(), error, json.dumps(progress) if progress else None,
                 run_id, QUEUED, RUNNING))
            return cur.rowcount == 1

    def request_cancel(self, run_id: str) -> str:
        """Queued runs are cancelled at once; running ones stop at their next batch.
        Returns the status after the request."""
        with self._tx(immediate=True) as db:
            row = db.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise RunNotFound(run_id)
            if row["status"] == QUEUED:
                db.execute("UPDATE runs SET status = ?, ended_at = ?, cancel_requested = 1 "
                           "WHERE id = ?", (CANCELLED, time.time(), run_id))
                return CANCELLED
            if row["status"] == RUNNING:
                db.execute("UPDATE runs SET cancel_requested = 1 WHERE id = ?", (run_id,))
            return row["status"]

    def cancel_requested(self, run_id: str) -> bool:
        row = self._conn().execute("SELECT cancel_requested FROM runs WHERE id = ?",
                                   (run_id,)).fetchone()
        return bool(row and row[0])

    def owner(self, run_id: str) -> str | None:
        row = self._conn().execute("SELECT owner FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise RunNotFound(run_id)
        return row["owner"]

    def rename(self, run_id: str, name: str, actor: access.Actor | None = None) -> None:
        """Only the run's owner or the instructor (core/access.py): PermissionDenied."""
        name = name.strip()
        if not name or len(name) > 80 or any(not c.isprintable() for c in name):
            raise ValueError("name: must be 1 to 80 printable characters")
        access.check_manage(self, actor, self.owner(run_id), run_id, "rename")
        with self._tx() as db:
            if db.execute("UPDATE runs SET name = ? WHERE id = ?", (name, run_id)).rowcount == 0:
                raise RunNotFound(run_id)

    def delete(self, run_id: str, actor: access.Actor | None = None) -> None:
        """Delete a finished run, its metrics and files. Active runs must be cancelled first.
        Only the run's owner or the instructor (core/access.py): PermissionDenied."""
        run = self.get(run_id)
        access.check_manage(self, actor, run.owner, run_id, "delete")
        if run.active:
            raise ValueError(f"run {run_id} is {run.status}: stop it before deleting it")
        with self._tx(immediate=True) as db:
            db.execute("DELETE FROM metrics WHERE run_id = ?", (run_id,))
            db.execute("DELETE FROM runs WHERE id = ?", (run_id,))
            db.execute("DELETE FROM artifacts WHERE run_id = ?", (run_id,))
        shutil.rmtree(self.run_dir(run_id), ignore_errors=True)

    def reap(self) -> list[str]:
        """Mark running runs whose worker is gone as interrupted (cancelled when a cancel was
        asked: a worker ended by force after it); drop partial model files. Returns their ids.

        Reading never starts a worker: the freed slot goes to the next queued run when
        someone dispatches (``jobs.dispatch`` reaps first; the web server's job board calls
        ``jobs.refresh`` every second while a job is active, the CLI's ``follow`` and
        ``runs`` dispatch too)."""
        rows = self._conn().execute(
            "SELECT id, pid, pid_started, host, heartbeat_at, cancel_requested FROM runs "
            "WHERE status = ?", (RUNNING,)).fetchall()
        now = time.time()
        dead = [(r["id"], bool(r["cancel_requested"])) for r in rows
                if not worker_alive(r["pid"], r["pid_started"], r["host"], r["heartbeat_at"], now)]
        reaped = []
        for run_id, cancelled in dead:
            if self.finish(run_id, CANCELLED if cancelled else INTERRUPTED,
                           error="The worker process stopped without finishing the run "
                                 "(killed, crashed or the machine restarted)" + (
                                     "; a cancel had been asked, so it was ended by force."
                                     if cancelled else ".")):
                reaped.append(run_id)
            (self.run_dir(run_id) / PARTIAL_MODEL_FILE).unlink(missing_ok=True)
        return reaped

    # -- classroom: settings, nicknames, archive, reuse ----------------------------------------
    def get_setting(self, key: str, default: Any = None) -> Any:
        row = self._conn().execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row["value"])

    def set_setting(self, key: str, value: Any) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM settings WHERE key = ?", (key,))
            db.execute("INSERT INTO settings (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    def class_gen(self) -> int:
        """The current class; archiving starts the next one (nicknames free again)."""
        return int(self.get_setting("class_gen", 0))

    def add_user(self, token: str, nickname: str, nick_key: str) -> bool:
        """Claim a nickname in the current class; False when it is taken."""
        try:
            with self._tx() as db:
                db.execute("INSERT INTO users (token, nickname, nick_key, class_gen, created_at) "
                           "VALUES (?, ?, ?, ?, ?)",
                           (token, nickname, nick_key, self.class_gen(), time.time()))
        except sqlite3.IntegrityError:
            return False
        return True

    def user_by_token(self, token: str) -> str | None:
        row = self._conn().execute(
            "SELECT nickname FROM users WHERE token = ? AND class_gen = ?",
            (token, self.class_gen())).fetchone()
        return row["nickname"] if row else None

    def set_user_key(self, token: str, key_hash: str | None) -> None:
        """Remember that this browser unlocked instructor mode (with the key of that hash)."""
        with self._tx() as db:
            db.execute("UPDATE users SET instructor_key = ? WHERE token = ?", (key_hash, token))

    def user_key(self, token: str) -> str | None:
        row = self._conn().execute(
            "SELECT instructor_key FROM users WHERE token = ? AND class_gen = ?",
            (token, self.class_gen())).fetchone()
        return row["instructor_key"] if row else None

    def users(self) -> list[str]:
        return [r[0] for r in self._conn().execute(
            "SELECT nickname FROM users WHERE class_gen = ? ORDER BY created_at",
            (self.class_gen(),)).fetchall()]

    def archive_class(self) -> int:
        """Hide every run from the class views (kept, for the instructor) and start a new
        class: queued runs are cancelled, nicknames are free again. Returns runs archived."""
        for run in self.list_runs(ACTIVE, reap=False):
            self.request_cancel(run.id)
        with self._tx() as db:
            n = db.execute("UPDATE runs SET archived = 1 WHERE archived = 0").rowcount
        self.set_setting("class_gen", self.class_gen() + 1)
        return n

    def find_reusable(self, reuse_key: str) -> Run | None:
        """The oldest completed, not archived, trained (not itself reused) run with that key."""
        row = self._conn().execute(
            "SELECT id FROM runs WHERE reuse_key = ? AND status = ? AND reused_from IS NULL "
            "AND archived = 0 ORDER BY seq", (reuse_key, COMPLETED)).fetchone()
        if row is None or not self.model_path(row["id"]).is_file():
            return None
        return self.get(row["id"], reap=False)

    def copy_completed(self, source: Run, cfg: TrainConfig, owner: str | None,
                       probes: Iterable[str] = (), group_id: str | None = None,
                       group_label: str | None = None) -> str:
        """A completed run answering a submission identical to ``source``: its results,
        metrics and model files (hard links where possible), linked by reused_from (and in
        the submission's group, if any)."""
        run_id = new_run_id()
        dest = self.run_dir(run_id)
        shutil.copytree(self.run_dir(source.id), dest, copy_function=_link_or_copy,
                        ignore=shutil.ignore_patterns("*.log", PARTIAL_MODEL_FILE))
        now = time.time()
        results = {**source.results, "reused_from": source.id}
        with self._tx(immediate=True) as db:
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM runs").fetchone()[0]
            db.execute(
                "INSERT INTO runs (id, seq, name, architecture, config, probes, status, "
                "created_at, started_at, ended_at, progress, results, env, owner, reused_from, "
                "reuse_key, group_id, group_label) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, seq, cfg.display_name(), cfg.architecture, cfg.to_json(),
                 json.dumps(list(probes) or source.probes), COMPLETED, now, now, now,
                 json.dumps({"stage": COMPLETED, "reused": True}), json.dumps(results),
                 json.dumps(source.env), owner, source.id, source.reuse_key, group_id,
                 group_label))
            db.execute("INSERT INTO metrics (run_id, step, epoch, phase, name, value, t) "
                       "SELECT ?, step, epoch, phase, name, value, t FROM metrics "
                       "WHERE run_id = ? ORDER BY id", (run_id, source.id))
        return run_id

    # -- metrics ---------------------------------------------------------------------------
    def add_metrics(self, run_id: str,
                    rows: Iterable[tuple[int, int, str, str, float | None, float]]) -> int:
        """Rows of (step, epoch, phase, name, value, time), in one transaction.
        SQLite keeps NaN as NULL: a NULL value is a non-finite metric."""
        data = [(run_id, *r) for r in rows]
        if not data:
            return 0
        with self._tx() as db:
            db.executemany("INSERT INTO metrics (run_id, step, epoch, phase, name, value, t) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?)", data)
        return len(data)

    def metrics(self, run_id: str, phase: str | None = None, after_id: int = 0
                ) -> list[dict[str, Any]]:
        sql = ("SELECT id, step, epoch, phase, name, value, t FROM metrics "
               "WHERE run_id = ? AND id > ?")
        args: list[Any] = [run_id, after_id]
        if phase:
            sql += " AND phase = ?"
            args.append(phase)
        return [dict(r) for r in self._conn().execute(sql + " ORDER BY id", args).fetchall()]

    def metric_count(self, run_id: str, phase: str | None = None) -> int:
        sql, args = "SELECT COUNT(*) FROM metrics WHERE run_id = ?", [run_id]
        if phase:
            sql += " AND phase = ?"
            args.append(phase)
        return self._conn().execute(sql, args).fetchone()[0]

    # -- artifacts -------------------------------------------------------------------------
    def publish(self, run_id: str, names: Iterable[str] = (ENCODER_FILE, MODEL_FILE)) -> int:
        """Worker side, after saving: copy the run's files into the database (PostgreSQL
        only; with SQLite they stay in the run folder, as ever). Returns bytes stored."""
        if not self.db_url:
            return 0
        total = 0
        for name in names:
            data = (self.run_dir(run_id) / name).read_bytes()
            with self._tx() as db:
                db.execute("DELETE FROM artifacts WHERE run_id = ? AND name = ?", (run_id, name))
                db.execute("INSERT INTO artifacts (run_id, name, data) VALUES (?, ?, ?)",
                           (run_id, name, data))
            total += len(data)
        return total

    def artifact(self, run_id: str, name: str) -> Path | None:
        """A run's file on this machine: the run folder's copy, else (PostgreSQL) fetched from
        the database into the run folder; None when the run has no such file."""
        path = self.run_dir(run_id) / name
        if path.is_file() or not self.db_url:
            return path if path.is_file() else None
        row = self._conn().execute("SELECT data FROM artifacts WHERE run_id = ? AND name = ?",
                                   (run_id, name)).fetchone()
        if row is None:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
        tmp.write_bytes(bytes(row[0]))
        os.replace(tmp, path)
        return path

    def integrity_ok(self) -> bool:
        return self._conn().execute("PRAGMA integrity_check").fetchone()[0] == "ok"
