"""Warm workers: a run is handed to a worker that already imported TensorFlow, one job per
process, a replacement waits for the next run, and an idle one leaves by itself."""

from __future__ import annotations

import time

import psutil
import pytest

from conftest import RUN_TIMEOUT_S, tiny_config, wait_for
from core import jobs, warm
from core.store import COMPLETED


def wait_ready(home, timeout: float = RUN_TIMEOUT_S) -> int:
    deadline = time.monotonic() + timeout
    while not (ready := warm._entries(home, "ready")):
        assert time.monotonic() < deadline, "no warm worker became ready"
        time.sleep(0.1)
    return ready[0]


@pytest.fixture
def warm_lab(lab, monkeypatch):
    monkeypatch.setenv("LAB_WARM_WORKERS", "1")
    return lab


def test_a_run_goes_to_the_waiting_worker_and_a_new_one_waits(warm_lab):
    lab = warm_lab
    jobs.dispatch(lab)  # nothing queued: starts the first warm worker
    waiting = wait_ready(lab.home)
    run_id = jobs.submit(lab, tiny_config(name="warm run"))
    run = wait_for(lab, run_id)
    assert run.status == COMPLETED, run.error
    assert run.pid == waiting  # the loaded worker ran it
    assert lab.metric_count(run_id, "batch") > 0
    replacement = wait_ready(lab.home)
    assert replacement != waiting
    deadline = time.monotonic() + 30
    while psutil.pid_exists(waiting) and psutil.Process(waiting).status() != "zombie":
        assert time.monotonic() < deadline, "the warm worker did not exit after its job"
        time.sleep(0.2)


def test_an_idle_warm_worker_leaves(warm_lab, monkeypatch):
    monkeypatch.setenv("LAB_WARM_IDLE_S", "0.5")
    started = warm.ensure(warm_lab.home, lambda: jobs.spawn(
        warm_lab.home, [warm.FLAG], warm.log_path(warm_lab.home)))
    assert started
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while psutil.pid_exists(started) and psutil.Process(started).status() != "zombie":
        assert time.monotonic() < deadline, "the idle warm worker is still there"
        time.sleep(0.2)
    assert not list(warm.folder(warm_lab.home).glob(f"{started}.*"))


def test_off_means_a_fresh_worker_per_run(lab):
    run_id = jobs.submit(lab, tiny_config())
    assert wait_for(lab, run_id).status == COMPLETED
    assert not warm._entries(lab.home, "ready") and not warm._entries(lab.home, "starting")
