"""Run store: concurrent writers lose nothing, claims are atomic, dead workers are reaped."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from conftest import tiny_config
from core import store as st
from core.paths import PROJECT_ROOT

WRITER = """
import sys, time
from core.store import RunStore
store = RunStore(sys.argv[1])
run_id, worker, rows = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
for i in range(rows):
    store.add_metrics(run_id, [(i, worker, "batch", f"w{worker}", float(i), time.time())])
    if i % 10 == 0:
        store.heartbeat(run_id, {"worker": worker, "i": i})
print("ok")
"""


def test_concurrent_writers_keep_every_row(tmp_path, figures):
    store = st.RunStore(tmp_path)
    run_id = store.create_run(tiny_config(), status=st.RUNNING)
    n_proc, rows = 4, 300
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), run_id, str(w),
                               str(rows)], cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for w in range(n_proc)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0 and out.strip() == "ok", err
        assert "locked" not in err
    assert store.metric_count(run_id) == n_proc * rows
    for w in range(n_proc):
        values = [r["value"] for r in store.metrics(run_id) if r["name"] == f"w{w}"]
        assert values == [float(i) for i in range(rows)]  # every row, in order
    assert store.integrity_ok()
    figures["06_concurrent_writers"] = {"processes": n_proc, "rows_each": rows,
                                        "rows_found": store.metric_count(run_id),
                                        "locked_errors": 0, "integrity": "ok"}


def test_claim_respects_slots_and_queue_order(tmp_path):
    store = st.RunStore(tmp_path)
    ids = [store.create_run(tiny_config(name=f"r{i}")) for i in range(3)]
    assert [store.queue_position(i) for i in ids] == [1, 2, 3]  # in submission order
    first = store.claim_next(max_running=1)
    assert first.id == ids[0] and first.status == st.RUNNING
    store.set_worker(first.id, os.getpid())  # alive: this test process
    assert store.claim_next(max_running=1) is None  # the slot is taken
    assert store.claim_next(max_running=2).id == ids[1]
    assert store.queue_position(ids[2]) == 1
    # Running and unknown runs have no place in the queue.
    assert store.queue_position(ids[0]) is None and store.queue_position("nope") is None


def test_dead_worker_is_marked_interrupted_when_someone_looks(tmp_path):
    store = st.RunStore(tmp_path)
    run_id = store.create_run(tiny_config())
    store.claim_next(1)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    store.set_worker(run_id, proc.pid)
    (store.run_dir(run_id) / st.PARTIAL_MODEL_FILE).write_bytes(b"half a model")
    assert store.get(run_id).status == st.RUNNING
    proc.kill()
    proc.wait()
    run = store.get(run_id)
    assert run.status == st.INTERRUPTED and "worker process stopped" in run.error
    assert not (store.run_dir(run_id) / st.PARTIAL_MODEL_FILE).exists()


def test_a_recycled_pid_does_not_count_as_alive():
    me = os.getpid()
    import psutil

    started = psutil.Process(me).create_time()
    host = __import__("socket").gethostname()
    assert st.worker_alive(me, started, host, None)
    assert not st.worker_alive(me, started - 1000, host, None)  # same pid, other process
    # Another host: only the heartbeat can tell.
    assert st.worker_alive(me, started, "elsewhere", time.time())
    assert not st.worker_alive(me, started, "elsewhere", time.time() - 3600)


def test_cancel_queued_is_immediate_and_final_status_is_first_wins(tmp_path):
    store = st.RunStore(tmp_path)
    run_id = store.create_run(tiny_config())
    assert store.request_cancel(run_id) == st.CANCELLED
    assert not store.finish(run_id, st.COMPLETED)  # already final
    assert store.get(run_id).status == st.CANCELLED


def test_rename_delete_and_missing_runs(tmp_path):
    store = st.RunStore(tmp_path)
    run_id = store.create_run(tiny_config())
    with pytest.raises(ValueError, match="stop it"):
        store.delete(run_id)
    store.rename(run_id, "my run")
    assert store.get(run_id).name == "my run"
    with pytest.raises(ValueError):
        store.rename(run_id, "")
    store.request_cancel(run_id)
    store.delete(run_id)
    assert not store.exists(run_id) and not store.run_dir(run_id).exists()
    with pytest.raises(st.RunNotFound):
        store.get(run_id)
    with pytest.raises(st.RunNotFound):
        store.run_dir("../etc")
