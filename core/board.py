"""The job board: one poll of the run store per web server, read by every session.

Thirty open tabs must not mean thirty pollers. Each session's fragments read this board; it
re-reads the store (reaping dead workers and starting queued runs through ``jobs.refresh``)
at most once per ``period``, and keeps each watched run's metric rows in one shared,
incrementally fetched list, so a session only asks for the rows it has not drawn yet.
"""

from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from core import fairq, jobs
from core.store import QUEUED, RUNNING, Run, RunStore

POLL_S = 1.0  # the board re-reads the store at most this often
FEED_IDLE_S = 600.0  # a run's metric feed nobody read for this long is dropped


@dataclass
class _Feed:
    """One run's metric rows by phase, in id order, and when they were last fetched."""
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    ids: dict[str, list[int]] = field(default_factory=dict)
    last_id: int = 0
    fetched: float = 0.0
    read: float = 0.0

    def add(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.rows.setdefault(row["phase"], []).append(row)
            self.ids.setdefault(row["phase"], []).append(row["id"])
            self.last_id = max(self.last_id, row["id"])

    def after(self, phase: str, after_id: int) -> list[dict[str, Any]]:
        ids = self.ids.get(phase, [])
        return self.rows.get(phase, [])[bisect.bisect_right(ids, after_id):]


class Board:
    """What every session of one web server sees of the jobs; safe across threads."""

    def __init__(self, store: RunStore, period: float = POLL_S):
        self.store, self.period = store, period
        self._lock = threading.Lock()
        self._active: list[Run] = []
        self._waits: dict[str, float] = {}
        self._at = float("-inf")
        self._feeds: dict[str, _Feed] = {}
        self.polls = 0  # store polls so far (the load benchmark and tests read it)

    def active(self) -> list[Run]:
        """Running runs first, then the queue in its fair order; at most ``period`` old."""
        with self._lock:
            if time.monotonic() - self._at >= self.period:
                runs = jobs.refresh(self.store)
                order = {run_id: i for i, run_id in enumerate(self.store.queue_order())}
                self._active = sorted(runs, key=lambda r: (
                    r.status != RUNNING, order.get(r.id, len(order)), r.seq))
                running = [r for r in self._active if r.status == RUNNING]
                queued = [r for r in self._active if r.status == QUEUED]
                self._waits = fairq.estimated_waits(queued, running, jobs.max_jobs(),
                                                    time.time())
                self._at = time.monotonic()
                self.polls += 1
            return self._active

    def estimated_wait(self, run_id: str) -> float | None:
        """Seconds until a queued run is expected to start (core/fairq.py); None if not queued."""
        self.active()
        return self._waits.get(run_id)

    def invalidate(self) -> None:
        """After a submit or cancel in this server: the next look re-reads the store."""
        with self._lock:
            self._at = float("-inf")

    def run(self, run_id: str) -> Run:
        """An active run from the snapshot; a finished one from the store (it no longer
        changes while watched). Raises RunNotFound."""
        for run in self.active():
            if run.id == run_id:
                return run
        return self.store.get(run_id, reap=False)

    def queue_position(self, run_id: str) -> int | None:
        """1 = next to start; None when the run is not queued."""
        queued = [r.id for r in self.active() if r.status == QUEUED]
        return queued.index(run_id) + 1 if run_id in queued else None

    def metrics(self, run_id: str, phase: str, after_id: int = 0) -> list[dict[str, Any]]:
        """The run's ``phase`` rows with id > after_id, from the shared feed."""
        now = time.monotonic()
        with self._lock:
            feed = self._feeds.setdefault(run_id, _Feed())
            if now - feed.fetched >= self.period:
                feed.add(self.store.metrics(run_id, after_id=feed.last_id))
                feed.fetched = now
            feed.read = now
            self._drop_idle(now)
            return feed.after(phase, after_id)

    def _drop_idle(self, now: float) -> None:
        for run_id in [r for r, f in self._feeds.items() if now - f.read > FEED_IDLE_S]:
            del self._feeds[run_id]
