"""A run whose PostgreSQL server goes away for a few seconds: the worker retries its writes
and finishes, or (when the outage outlasts LAB_DB_RETRY_S) ends ``failed`` saying why. In
both cases nothing is lost or duplicated, and the store answers again after the restart."""

from __future__ import annotations

import time

import pytest

from conftest import tiny_config, wait_for
from core import jobs
from core.store import COMPLETED, FAILED, RunStore
from pgserver import PgServer, missing_reason

pytestmark = pytest.mark.slow

# 240 batches, each slowed by the slow_batches fault (0.05 s): >= 12 s of training, still
# training when the server stops (after batch 5) and when it comes back (3 s later, plus
# the restart), however fast the kernels are. (It was 480: 12 s more for nothing.)
LONG = dict(epochs=30, train_size=256, validation_split=0.0)


@pytest.fixture(scope="module")
def pg():
    """This module stops and restarts its server, so it has its own."""
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    server = PgServer()
    yield server
    server.close()


@pytest.fixture
def pg_lab(lab, pg, monkeypatch, slow_batches):
    monkeypatch.setenv("LAB_DB_URL", pg.new_database("outage"))
    store = RunStore(lab.home)
    yield store
    store.close()


def _steps(store, run_id):
    return [r["step"] for r in store.metrics(run_id, "batch") if r["name"] == "loss"]


def _outage(pg, store, run_id, seconds):
    """Stop the server once the run is training, keep it down ``seconds``, start it."""
    wait_for(store, run_id, until=lambda r: r.progress.get("done", 0) >= 5 or not r.active)
    store.close()  # this test's own connection would otherwise be dropped too
    pg.stop()
    time.sleep(seconds)
    pg.start()


def test_worker_rides_out_a_short_outage(pg, pg_lab):
    """A 3 s outage mid-run: the worker retries its writes and the run completes with every
    batch's row, once, in order."""
    run_id = jobs.submit(pg_lab, tiny_config(**LONG))
    _outage(pg, pg_lab, run_id, 3)
    run = wait_for(pg_lab, run_id)
    assert run.status == COMPLETED, run.error
    steps = _steps(pg_lab, run_id)
    assert steps == list(range(1, run.progress["done"] + 1))  # every batch, once, in order
    assert pg_lab.integrity_ok()


def test_an_outage_past_the_retry_window_fails_the_run_with_the_reason(pg, pg_lab, monkeypatch):
    """An outage longer than LAB_DB_RETRY_S ends the run ``failed`` with the reason; what
    was written stays whole."""
    monkeypatch.setenv("LAB_DB_RETRY_S", "1")
    run_id = jobs.submit(pg_lab, tiny_config(**LONG))
    _outage(pg, pg_lab, run_id, 6)
    run = wait_for(pg_lab, run_id)
    assert run.status == FAILED
    assert run.error.startswith("the run store's PostgreSQL server could not be reached")
    steps = _steps(pg_lab, run_id)
    assert steps == list(range(1, len(steps) + 1))  # what was written is whole
    assert pg_lab.integrity_ok() and pg_lab.get(run_id).status == FAILED
