"""Warm workers: a worker process that has already imported TensorFlow waits for its run.

A fresh worker spends seconds importing TensorFlow and loading the native kernels before it
can read its first batch; a student's tiny job should start learning at once. So one worker
waits, loaded (and with the likeliest run's model traced: core/warmstart.py), in each lab home, and ``jobs.dispatch`` hands it the next claimed run
through small files in ``LAB_HOME/warm/`` (no sockets, nothing to leak):

    PID.starting  the spawner created it; the worker is still importing or preparing
    PID.ready     the worker waits for a run (it polls for PID.go)
    PID.taken     a dispatcher took it (an atomic rename: one taker wins) ...
    PID.go        ... and wrote the run id here; the worker removes both and runs it

A dispatcher takes a ready worker, else a starting one: that one runs the run as soon as it
has loaded (skipping its preparation), which is sooner than a fresh process loading beside
it would.

A warm worker runs one job and exits (its memory returns to the system), and one that waits
longer than ``LAB_WARM_IDLE_S`` leaves. ``LAB_WARM_WORKERS=0`` turns them off.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import psutil

FLAG = "--warm"  # python -m core.worker --warm
DIR = "warm"
POLL_S = 0.05  # a waiting worker looks for its run this often (one stat call)
DEFAULT_IDLE_S = 1800.0
HANDOVER_S = 10.0  # a taken worker waits this long for its run id before giving up
REFRESH_S = 2.0  # a ready worker looks this often whether the next run changed (one query)


def enabled() -> bool:
    return os.environ.get("LAB_WARM_WORKERS", "1").strip() not in ("0", "false", "no", "off")


def idle_limit() -> float:
    try:
        return float(os.environ.get("LAB_WARM_IDLE_S", DEFAULT_IDLE_S))
    except ValueError:
        return DEFAULT_IDLE_S


def folder(home: Path) -> Path:
    path = Path(home) / DIR
    path.mkdir(parents=True, exist_ok=True)
    return path


def log_path(home: Path) -> Path:
    return folder(home) / "warm.log"


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.Error:
        return False


def _entries(home: Path, state: str) -> list[int]:
    """Pids with a file in ``state``; files of dead workers are removed."""
    pids = []
    for path in sorted(folder(home).glob(f"*.{state}")):
        with contextlib.suppress(ValueError):
            pid = int(path.stem)
            if _alive(pid):
                pids.append(pid)
                continue
        path.unlink(missing_ok=True)
    return pids


def hand_over(home: Path, run_id: str) -> int | None:
    """Give a claimed run to a waiting worker, else to a starting one; its pid, or None
    when there is neither."""
    if not enabled():
        return None
    root = folder(home)
    for state in ("ready", "starting"):
        for pid in _entries(home, state):
            try:
                os.rename(root / f"{pid}.{state}", root / f"{pid}.taken")
            except FileNotFoundError:  # another dispatcher took it, it left (idle) or it
                continue  # became ready meanwhile
            tmp = root / f"{pid}.go.tmp"
            tmp.write_text(run_id)
            os.replace(tmp, root / f"{pid}.go")
            return pid
    return None


def handed(home: Path) -> bool:
    """In a warm worker: whether a dispatcher has taken it (while it was starting)."""
    root, pid = folder(home), os.getpid()
    return (root / f"{pid}.taken").exists() or (root / f"{pid}.go").exists()


def ensure(home: Path, spawn: Callable[[], int]) -> int | None:
    """Start a warm worker unless one is waiting or starting; returns the new pid."""
    if not enabled() or _entries(home, "ready") or _entries(home, "starting"):
        return None
    pid = spawn()
    (folder(home) / f"{pid}.starting").touch()
    return pid


def wait_for_run(home: Path, refresh: Callable[[], object] | None = None) -> str | None:
    """In the warm worker, once loaded: announce it and wait for a run id (at once when it
    was taken while starting); None after ``idle_limit()`` seconds without one (the worker
    then exits). Meanwhile ``refresh()`` runs every ``REFRESH_S`` seconds (the worker
    prepares again when the next run changed)."""
    root, pid = folder(home), os.getpid()
    ready = root / f"{pid}.ready"
    try:
        os.rename(root / f"{pid}.starting", ready)
    except FileNotFoundError:  # taken while starting, or started without the spawner's file
        if not handed(home):
            ready.touch()
    go, deadline = root / f"{pid}.go", time.monotonic() + idle_limit()
    next_refresh = time.monotonic() + REFRESH_S
    while not go.exists():
        if refresh is not None and time.monotonic() >= next_refresh:
            refresh()
            next_refresh = time.monotonic() + REFRESH_S
            continue
        if time.monotonic() > deadline:
            try:
                os.rename(ready, root / f"{pid}.left")  # not taken: leave
            except FileNotFoundError:  # taken just now: the run id is on its way, unless
                if time.monotonic() > deadline + HANDOVER_S:  # its dispatcher died
                    return None
                time.sleep(POLL_S)
                continue
            (root / f"{pid}.left").unlink(missing_ok=True)
            return None
        time.sleep(POLL_S)
    run_id = go.read_text().strip()
    for state in ("go", "taken", "starting"):
        (root / f"{pid}.{state}").unlink(missing_ok=True)
    return run_id


def stop_all(home: Path) -> list[int]:
    """Kill every warm worker of this lab home that is still waiting (tests, archiving)."""
    killed = []
    for state in ("ready", "starting"):
        for pid in _entries(home, state):
            with contextlib.suppress(OSError):
                os.kill(pid, 9)
                killed.append(pid)
    return killed
