"""Run store: concurrent writers lose nothing, claims are atomic, dead workers are reaped.

Every test runs twice, on SQLite and on PostgreSQL (the ``backend`` fixture), because the
store's SQL is written once and translated (core.db): a translation gap shows up here."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time

import pytest

from conftest import tiny_config
from core import db as dbapi
from core.paths import PROJECT_ROOT
from core.store import (
    _SCHEMA,
    CANCELLED,
    COMPLETED,
    ENCODER_FILE,
    INTERRUPTED,
    MODEL_FILE,
    PARTIAL_MODEL_FILE,
    RUNNING,
    QueueFull,
    RunNotFound,
    RunStore,
    worker_alive,
)

pytestmark = pytest.mark.usefixtures("backend")

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
    store = RunStore(tmp_path)
    run_id = store.create_run(tiny_config(), status=RUNNING)
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
    store = RunStore(tmp_path)
    ids = [store.create_run(tiny_config(name=f"r{i}")) for i in range(3)]
    assert [store.queue_position(i) for i in ids] == [1, 2, 3]  # in submission order
    first = store.claim_next(max_running=1)
    assert first.id == ids[0] and first.status == RUNNING
    store.set_worker(first.id, os.getpid())  # alive: this test process
    assert store.claim_next(max_running=1) is None  # the slot is taken
    assert store.claim_next(max_running=2).id == ids[1]
    assert store.queue_position(ids[2]) == 1
    # Running and unknown runs have no place in the queue.
    assert store.queue_position(ids[0]) is None and store.queue_position("nope") is None


def test_dead_worker_is_marked_interrupted_when_someone_looks(tmp_path):
    store = RunStore(tmp_path)
    run_id = store.create_run(tiny_config())
    store.claim_next(1)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    store.set_worker(run_id, proc.pid)
    (store.run_dir(run_id) / PARTIAL_MODEL_FILE).write_bytes(b"half a model")
    assert store.get(run_id).status == RUNNING
    proc.kill()
    proc.wait()
    run = store.get(run_id)
    assert run.status == INTERRUPTED and "worker process stopped" in run.error
    assert not (store.run_dir(run_id) / PARTIAL_MODEL_FILE).exists()


def test_a_worker_gone_after_a_cancel_request_ends_cancelled(tmp_path):
    """A launcher that kills a worker which ignored the cancel flag (Ray's forced cancel)
    leaves a run the user asked to stop: it is cancelled, not interrupted."""
    store = RunStore(tmp_path)
    run_id = store.create_run(tiny_config())
    store.claim_next(1)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    store.set_worker(run_id, proc.pid)
    assert store.request_cancel(run_id) == RUNNING
    proc.kill()
    proc.wait()
    run = store.get(run_id)
    assert run.status == CANCELLED and "by force" in run.error


def test_a_recycled_pid_does_not_count_as_alive():
    me = os.getpid()
    import psutil

    started = psutil.Process(me).create_time()
    host = __import__("socket").gethostname()
    assert worker_alive(me, started, host, None)
    assert not worker_alive(me, started - 1000, host, None)  # same pid, other process
    # Another host: only the heartbeat can tell.
    assert worker_alive(me, started, "elsewhere", time.time())
    assert not worker_alive(me, started, "elsewhere", time.time() - 3600)


def test_cancel_queued_is_immediate_and_final_status_is_first_wins(tmp_path):
    store = RunStore(tmp_path)
    run_id = store.create_run(tiny_config())
    assert store.request_cancel(run_id) == CANCELLED
    assert not store.finish(run_id, COMPLETED)  # already final
    assert store.get(run_id).status == CANCELLED


def test_rename_delete_and_missing_runs(tmp_path):
    store = RunStore(tmp_path)
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
    with pytest.raises(RunNotFound):
        store.get(run_id)
    with pytest.raises(RunNotFound):
        store.run_dir("../etc")


def test_nan_metrics_are_stored_as_null(tmp_path):
    """A diverged run's last loss is NaN; readers treat NULL as "not finite" on both back
    ends (PostgreSQL would otherwise keep NaN, and charts would differ by back end)."""
    store = RunStore(tmp_path)
    run_id = store.create_run(tiny_config(), status=RUNNING)
    store.add_metrics(run_id, [(1, 0, "batch", "loss", float("nan"), time.time()),
                               (2, 0, "batch", "loss", 0.5, time.time())])
    assert [r["value"] for r in store.metrics(run_id, "batch")] == [None, 0.5]


def test_claims_race_hands_each_run_to_one_claimer(tmp_path):
    """Four processes claim at once from three queued runs with two slots: exactly two
    claims succeed and no run is claimed twice (the claim is one serialized transaction)."""
    store = RunStore(tmp_path)
    for i in range(3):
        store.create_run(tiny_config(name=f"r{i}"))
    claimer = ("import sys; from core.store import RunStore; "
               "run = RunStore(sys.argv[1]).claim_next(2); print(run.id if run else '-')")
    procs = [subprocess.Popen([sys.executable, "-c", claimer, str(tmp_path)], cwd=PROJECT_ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    claimed = [out.strip() for out, _ in outs if out.strip() != "-"]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    assert len(claimed) == 2 and len(set(claimed)) == 2
    assert len(store.list_runs([RUNNING], reap=False)) == 2


def test_artifacts_reach_a_machine_without_the_run_folder(tmp_path, backend, monkeypatch):
    """A web server on another machine (another LAB_HOME) gets a run's files: from the
    database on PostgreSQL, from the shared LAB_ARTIFACTS folder on SQLite."""
    if backend == "sqlite":
        monkeypatch.setenv("LAB_ARTIFACTS", str(tmp_path / "shared-runs"))
    worker = RunStore(tmp_path / "node-a")
    run_id = worker.create_run(tiny_config())
    worker.encoder_path(run_id).write_text('{"words": 1}')
    worker.model_path(run_id).write_bytes(b"PK\x03\x04 a model")
    worker.publish(run_id)
    web = RunStore(tmp_path / "web")
    assert web.artifact(run_id, MODEL_FILE).read_bytes() == b"PK\x03\x04 a model"
    assert web.artifact(run_id, ENCODER_FILE).read_text() == '{"words": 1}'
    assert web.artifact(run_id, "nothing.bin") is None


def test_sqlite_only_statements_a_later_change_may_add_run_on_both(tmp_path, backend):
    """Statements another change to the store is likely to add (a settings table filled with
    INSERT OR IGNORE, a column added by ALTER TABLE) are translated, not duplicated."""
    db = RunStore(tmp_path)._conn()
    db.execute("CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v REAL)")
    for value in (1.0, 2.0):
        db.execute("INSERT OR IGNORE INTO kv (k, v) VALUES (?, ?)", ("a", value))
    assert db.execute("SELECT v FROM kv WHERE k = ?", ("a",)).fetchone()[0] == 1.0
    db.execute("ALTER TABLE kv ADD COLUMN owner TEXT")
    if backend == "postgresql":
        db.execute("ALTER TABLE kv ADD COLUMN owner TEXT")  # a re-run migration: a no-op
    assert [r["owner"] for r in db.execute("SELECT owner FROM kv").fetchall()] == [None]


def test_a_thread_hands_its_connection_to_the_next(tmp_path):
    """The web server runs every fragment rerun in a new thread: each must not open (and
    on PostgreSQL, fork a backend for) a connection of its own, and two threads at once
    must never share one."""
    import threading

    store = RunStore(tmp_path)
    run_id = store.create_run(tiny_config())
    seen, together = [], threading.Barrier(2)

    def look(wait: bool = False) -> None:
        conn = store._conn()
        assert store.get(run_id).id == run_id
        if wait:
            together.wait(timeout=10)
        seen.append(id(conn))

    for _ in range(5):  # one after the other, as a tab's reruns
        t = threading.Thread(target=look)
        t.start()
        t.join()
    assert len(set(seen)) == 1
    seen.clear()
    pair = [threading.Thread(target=look, args=(True,)) for _ in range(2)]
    for t in pair:
        t.start()
    for t in pair:
        t.join()
    assert len(set(seen)) == 2


def test_runs_of_a_group_are_stored_together_or_not_at_all(tmp_path):
    """A seed group's runs carry its id and label, come back in the order queued, and are
    inserted in one transaction: a group that would overfill the owner's queue stores none."""
    store = RunStore(tmp_path)
    alone = store.create_run(tiny_config())
    members = [(tiny_config(seed=s), f"key{s}") for s in (1, 2, 3)]
    ids = store.create_runs(members, ["a probe"], owner="Ana", max_queued=3,
                            group_id="g1", group_label="tiny × 3 seeds")
    group = store.group("g1")
    assert [r.id for r in group] == ids and [r.config.seed for r in group] == [1, 2, 3]
    assert {(r.group_id, r.group_label, r.owner) for r in group} == {
        ("g1", "tiny × 3 seeds", "Ana")}
    assert [r.reuse_key for r in group] == ["key1", "key2", "key3"]
    assert group[0].probes == ["a probe"] and all(store.run_dir(i).is_dir() for i in ids)
    assert store.get(alone).group_id is None and store.group("nope") == []
    with pytest.raises(QueueFull, match="2 more runs would give Ana 5 waiting.*"
                                        "Ana may queue 1 more now"):
        store.create_runs(members[:2], owner="Ana", max_queued=4, group_id="g2")
    assert store.group("g2") == [] and len(store.list_runs()) == 4


def test_a_store_made_before_seed_groups_is_migrated_in_place(tmp_path, backend):
    """An existing database (either back end) gains the group columns on first open; its
    runs belong to no group, and opening it again changes nothing."""
    if backend == "postgresql":
        old = dbapi.connect_postgres(dbapi.url())
    else:
        old = sqlite3.connect(tmp_path / "runs.db", isolation_level=None)
    old.executescript(_SCHEMA)  # the tables as an older version made them
    old.execute("INSERT INTO runs (id, seq, name, architecture, config, status, created_at) "
                "VALUES (?, 1, 'old', 'lstm', ?, 'completed', 0)",
                ("20200101-000000-aaaaaa", tiny_config().to_json()))
    old.close()
    store = RunStore(tmp_path)
    run = store.get("20200101-000000-aaaaaa")
    assert run.group_id is None and run.group_label is None and run.owner is None
    new = store.create_run(tiny_config(), group_id="g1", group_label="one")
    store.close()
    again = RunStore(tmp_path)
    assert [r.id for r in again.group("g1")] == [new]
