"""Shared fixtures: an isolated LAB_HOME per test, the demo data, tiny configs, a trained run."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import time
from pathlib import Path

import pytest

from core import inference, jobs, warm
from core.config import load_config
from core.paths import PROJECT_ROOT
from core.store import COMPLETED, Run, RunStore
from pgserver import PgServer, missing_reason

# The real reviews, when the shared data folder sits beside the project.
ARCHIVE = PROJECT_ROOT.parent / "shared" / "data" / "aclImdb_v1_labeled.tar.gz"
needs_archive = pytest.mark.skipif(
    not ARCHIVE.exists(),
    reason=f"the aclImdb archive is not at {ARCHIVE} (tests on real reviews need it)")

# A model small enough to train in a few seconds on the demo set.
TINY = {"architecture": "lstm", "top_words": 100, "maxlen": 40, "embedding_dim": 8,
        "units": 4, "epochs": 1, "batch_size": 32, "train_size": 256, "test_size": 128,
        "validation_split": 0.25, "seed": 1}
# Worker processes import TensorFlow (several seconds each); waits allow for a busy machine.
RUN_TIMEOUT_S = 180

os.environ.setdefault("LAB_OFFLINE", "1")  # never probe the network from tests
# Each test's lab would otherwise keep a TensorFlow process waiting for a next job that never
# comes; tests of warm workers turn them on (tests/test_warm.py).
os.environ.setdefault("LAB_WARM_WORKERS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# LAB_FAULT=slow-batch:S (core/training.py): the worker sleeps S seconds after every training
# batch, so a job stays mid-epoch as long as a test needs, however fast the kernels get.
SLOW_BATCH_S = 0.05
SLOW_FAULT = f"slow-batch:{SLOW_BATCH_S}"


@pytest.fixture
def slow_batches(monkeypatch) -> float:
    """Workers started from this test sleep SLOW_BATCH_S after each batch (they inherit the
    environment); returns the sleep."""
    monkeypatch.setenv("LAB_FAULT", SLOW_FAULT)
    return SLOW_BATCH_S


def tiny_config(**overrides):
    return load_config({**TINY, **overrides})


def wait_for(store: RunStore, run_id: str, timeout: float = RUN_TIMEOUT_S,
             until=lambda run: not run.active) -> Run:
    """Poll the store until ``until(run)`` holds; fails the test on timeout. Polls as the
    CLI's follow does: dispatching, so a dead worker's slot goes to the next queued run."""
    deadline = time.monotonic() + timeout
    while True:
        jobs.dispatch(store)
        run = store.get(run_id, reap=False)
        if until(run):
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} still {run.status} after {timeout}s: "
                                 f"{run.progress} {run.error}")
        time.sleep(0.2)


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One encoded-data cache for the whole session (the demo set encodes once)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def lab(tmp_path, monkeypatch, shared_cache) -> RunStore:
    """A fresh run store in tmp_path, reading the demo data."""
    monkeypatch.setenv("LAB_HOME", str(tmp_path / "lab"))
    monkeypatch.setenv("LAB_CACHE", str(shared_cache))
    monkeypatch.setenv("IMDB_DATA", "demo")
    monkeypatch.setenv("LAB_MAX_JOBS", "1")
    store = RunStore()
    yield store
    stop_workers(store)


def stop_workers(store: RunStore) -> None:
    """Cancel every active run and kill its worker, the warm workers and the inference
    process: all are detached processes, and none may outlive its test."""
    warm.stop_all(store.home)
    inference.stop(store.home)
    for run in store.list_runs(reap=False):
        if run.active:
            store.request_cancel(run.id)
            if run.pid:
                try:
                    os.kill(run.pid, signal.SIGKILL)
                except OSError:
                    pass


@pytest.fixture(scope="session")
def trained_home(tmp_path_factory, shared_cache) -> Path:
    """A LAB_HOME holding one completed tiny run (trained once per session, in a worker)."""
    home = tmp_path_factory.mktemp("trained")
    old = {k: os.environ.get(k) for k in ("LAB_HOME", "LAB_CACHE", "IMDB_DATA")}
    os.environ.update(LAB_HOME=str(home), LAB_CACHE=str(shared_cache), IMDB_DATA="demo")
    try:
        store = RunStore()
        run_id = jobs.submit(store, tiny_config(epochs=2, name="tiny fixture run"),
                             probes=["a wonderful film", "a boring waste"])
        run = wait_for(store, run_id)
        assert run.status == COMPLETED, run.error
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return home


@pytest.fixture
def lab_with_run(lab, trained_home) -> tuple[RunStore, str]:
    """``lab`` plus a copy of the trained tiny run; returns (store, run_id)."""
    lab.close()
    shutil.rmtree(lab.home)
    shutil.copytree(trained_home, lab.home)
    store = RunStore(lab.home)
    run_id = store.list_runs()[0].id
    return store, run_id


@pytest.fixture(scope="session")
def pg_server():
    """One throwaway PostgreSQL server for the whole session (each test gets its own
    database). Skipped, with the reason, where the server binaries are missing; CI sets
    LAB_TEST_POSTGRES=required (.ci/run installs them), so there it fails instead."""
    reason = missing_reason()
    if reason:
        if os.environ.get("LAB_TEST_POSTGRES") == "required":
            pytest.fail(reason)
        pytest.skip(reason)
    server = PgServer()
    yield server
    server.close()


@pytest.fixture
def pg_url(pg_server) -> str:
    """A fresh, empty database on the session's server."""
    return pg_server.new_database("lab_" + secrets.token_hex(4))


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, monkeypatch) -> str:
    """Runs a test once per run-store back end: SQLite, then PostgreSQL (LAB_DB_URL, a
    fresh database); worker subprocesses inherit the choice through the environment."""
    if request.param == "postgresql":
        monkeypatch.setenv("LAB_DB_URL", request.getfixturevalue("pg_url"))
    else:
        monkeypatch.delenv("LAB_DB_URL", raising=False)
    return request.param


@pytest.fixture(scope="session")
def figures():
    """Measured figures from reliability tests, written to test-artifacts/reliability.json
    (RELIABILITY.md reports them)."""
    import json

    found: dict[str, object] = {}
    yield found
    if found:
        out = PROJECT_ROOT / "test-artifacts"
        out.mkdir(exist_ok=True)
        path = out / "reliability.json"
        old = json.loads(path.read_text()) if path.exists() else {}
        path.write_text(json.dumps({**old, **found}, indent=2, sort_keys=True))
