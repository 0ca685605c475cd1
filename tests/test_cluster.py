"""Runs on a Ray cluster with the run store in PostgreSQL: a local cluster of two nodes of
one CPU each (ray.cluster_utils.Cluster, one per module: Ray starts slowly on two cores).

The lab's queue hands claimed runs to Ray; each run must record the node it ran on, stream
every metric row into PostgreSQL, and leave a model that a web server with its own,
empty LAB_HOME loads from the database; warm executors must take later runs, one run per
process. Killing a node mid-run must end that run ``interrupted`` while the queue goes on;
a run waiting for a CPU must stay alive with nobody dispatching."""

from __future__ import annotations

import math
import time

import psutil
import pytest

import core.store
from conftest import RUN_TIMEOUT_S, tiny_config
from core import inference, jobs, raylaunch
from core.store import CANCELLED, COMPLETED, INTERRUPTED, MODEL_FILE, RUNNING, Run, RunStore
from pgserver import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(pg_server, shared_cache, tmp_path_factory):
    """(store, cluster, worker node): the lab's environment points at the cluster and a
    fresh PostgreSQL database for the whole module."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    home = tmp_path_factory.mktemp("cluster-lab")
    with pytest.MonkeyPatch.context() as mp:
        # Ray starts its workers at nice 15: on a CPU shared with other tests they would
        # starve; the local launcher's workers run at the tests' own priority.
        mp.setenv("RAY_worker_niceness", "0")
        # The head also serves Ray Client (``ray://``), as a head started with ``ray start
        # --head`` does on port 10001.
        c = Cluster(initialize_head=True,
                    head_node_args={"num_cpus": 1, "include_dashboard": False,
                                    "ray_client_server_port": free_port()})
        worker_node = c.add_node(num_cpus=1)
        c.wait_for_nodes()
        mp.setenv("LAB_HOME", str(home))
        mp.setenv("LAB_CACHE", str(shared_cache))
        mp.setenv("IMDB_DATA", "demo")
        mp.setenv("LAB_MAX_JOBS", "2")
        mp.setenv("LAB_DB_URL", pg_server.new_database("cluster"))
        mp.setenv("LAB_RAY_ADDRESS", c.address)
        store = RunStore()
        try:
            yield store, c, worker_node
        finally:
            ray.shutdown()
            c.shutdown()


def drain(store: RunStore, ids: list[str], timeout: float = 3 * RUN_TIMEOUT_S,
          until=lambda runs: all(not r.active for r in runs)) -> list[Run]:
    """Poll as the web server's board does (jobs.refresh: Ray's view, reaping, dispatch)."""
    deadline = time.monotonic() + timeout
    while True:
        jobs.refresh(store)
        runs = [store.get(i, reap=False) for i in ids]
        if until(runs):
            return runs
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting: {[(r.id, r.status, r.progress) for r in runs]}")
        time.sleep(0.3)


def test_four_warm_jobs_run_on_both_nodes_and_the_web_side_predicts(cluster, tmp_path,
                                                                     monkeypatch):
    """Runs claimed from the queue train on both Ray nodes, stream every metric row into
    PostgreSQL, and a web server with an empty LAB_HOME predicts from the stored models.
    With warm executors on (LAB_WARM_WORKERS, as deployed), a spare that loaded TensorFlow
    ahead on a node takes the next run placed there; every run still gets a process of its
    own, which is gone once the run ends (its memory back to the machine). (One set of four
    runs for both: the cold executors are the other tests' runs.)"""
    store, _, _ = cluster
    monkeypatch.setenv("LAB_WARM_WORKERS", "1")
    ids = [jobs.submit(store, tiny_config(seed=i, name=f"ray {i}"),
                       probes=["a wonderful film"]) for i in range(4)]
    runs = sorted(drain(store, ids), key=lambda r: r.started_at)
    assert [r.status for r in runs] == [COMPLETED] * 4, [r.error for r in runs]
    nodes = {r.env.get("ray_node") for r in runs}
    assert None not in nodes and len(nodes) == 2  # both nodes trained
    assert len({r.pid for r in runs}) == 4
    kinds = [r.results["ray"]["executor"] for r in runs]
    assert kinds[:2] == ["new", "new"] and set(kinds[2:]) & {"spare", "loading spare"}, kinds
    steps = math.ceil(192 / 32)
    for r in runs:
        for name in ("loss", "accuracy"):
            batch = [m["step"] for m in store.metrics(r.id, "batch") if m["name"] == name]
            assert batch == list(range(1, steps + 1))
            assert len([m for m in store.metrics(r.id, "val") if m["name"] == name]) == 1
        assert store.metric_count(r.id, "probe") == 2
    deadline = time.monotonic() + 30
    while any(psutil.pid_exists(r.pid) and psutil.Process(r.pid).status() != "zombie"
              for r in runs):
        assert time.monotonic() < deadline, "a run's executor outlived its run"
        time.sleep(0.5)
    ray = raylaunch.connect()
    assert ray.get(raylaunch.launcher(store).prune.remote(0)) >= 1  # the spares it left
    # A web server elsewhere: its own LAB_HOME, no run folders; models come from PostgreSQL.
    web = tmp_path / "web"
    client = inference.InferenceClient(web)
    try:
        for r in runs:
            p = client.predict(r.id, ["a wonderful film"])[0]["probability"]
            last_probe = [m["value"] for m in store.metrics(r.id, "probe")][-1]
            assert p == pytest.approx(last_probe, abs=1e-5)
    finally:
        inference.stop(web)
    assert (web / "runs" / runs[0].id / MODEL_FILE).is_file()  # fetched, then cached


def test_a_ray_client_address_runs_the_queue_too(cluster, monkeypatch):
    """``LAB_RAY_ADDRESS=ray://host:port`` (Ray Client, for a web server outside the
    cluster): the same launcher takes the runs, they record their nodes and complete."""
    store, c, _ = cluster
    ray = raylaunch.connect()
    port = c.head_node._ray_params.ray_client_server_port
    ray.shutdown()
    monkeypatch.setenv("LAB_RAY_ADDRESS", f"ray://127.0.0.1:{port}")
    try:
        ray = raylaunch.connect()
        assert ray.util.client.ray.is_connected()  # through Ray Client, not the driver API
        ids = [jobs.submit(store, tiny_config(seed=i, name=f"client {i}")) for i in range(2)]
        runs = drain(store, ids)
        assert [r.status for r in runs] == [COMPLETED] * 2, [r.error for r in runs]
        assert all(r.env.get("ray_node") for r in runs)
        assert all(store.metric_count(r.id, "batch") for r in runs)
    finally:
        ray.shutdown()  # the next test connects as a driver again


def test_cancel_stops_a_deaf_worker_by_force_through_ray(cluster, monkeypatch):
    """The store's flag stops a run at its next batch; a worker that does not look (LAB_FAULT
    =deaf) is cancelled by Ray after the grace period and its run ends ``cancelled``. Batches
    of 2 (19,200 of them): the run still trains when the grace period ends, however fast
    fast mode's steps get (200 epochs of 6 batches had ended first)."""
    store, _, _ = cluster
    monkeypatch.setenv("LAB_FAULT", "deaf")
    monkeypatch.setenv("LAB_CANCEL_GRACE_S", "1")
    run_id = jobs.submit(store, tiny_config(epochs=200, batch_size=2, name="deaf"))
    drain(store, [run_id], until=lambda runs: runs[0].progress.get("done", 0) >= 2)
    monkeypatch.delenv("LAB_FAULT")
    assert jobs.cancel(store, run_id) == RUNNING
    (run,) = drain(store, [run_id])
    assert run.status == CANCELLED and "force" in run.error, run.error
    assert run.progress.get("stage") != CANCELLED  # the worker never got to record it


def test_a_run_waiting_for_a_cpu_is_kept_alive_by_the_launcher(cluster, monkeypatch,
                                                               slow_batches):
    """Three slots on two CPUs: the third run waits inside Ray. Nobody dispatches meanwhile
    (no page, no CLI), yet the launcher's heartbeat keeps it from being reaped as dead."""
    store, _, _ = cluster
    monkeypatch.setenv("LAB_MAX_JOBS", "3")
    monkeypatch.setattr(core.store, "STALE_S", 3.0)
    ids = [jobs.submit(store, tiny_config(epochs=20, seed=i, name=f"wait {i}"))
           for i in range(3)]
    time.sleep(2 * core.store.STALE_S)
    runs = [store.get(i, reap=False) for i in ids]
    assert [r.status for r in runs] == [RUNNING] * 3
    assert any(r.pid is None for r in runs)  # one still waits for a CPU
    assert store.reap() == []
    runs = drain(store, ids)
    assert [r.status for r in runs] == [COMPLETED] * 3, [r.error for r in runs]


def test_a_node_killed_mid_run_interrupts_its_run_and_the_queue_goes_on(cluster, slow_batches):
    """Last in the module: the cluster has one node left after it. Batches slowed by fault
    injection (120 of them, >= 6 s; the node goes right after the victim's second batch):
    the victim is still training when its node goes, however fast the kernels are."""
    store, c, worker_node = cluster
    ids = [jobs.submit(store, tiny_config(epochs=20, seed=i, name=f"kill {i}"))
           for i in range(3)]

    def victim_training(runs):
        return any(r.env.get("ray_node") == worker_node.node_id
                   and r.progress.get("done", 0) >= 2 for r in runs)

    runs = drain(store, ids, until=victim_training)
    victim = next(r.id for r in runs if r.env.get("ray_node") == worker_node.node_id)
    c.remove_node(worker_node, allow_graceful=False)
    runs = {r.id: r for r in drain(store, ids)}
    assert runs[victim].status == INTERRUPTED
    assert all(runs[i].status == COMPLETED for i in ids if i != victim), \
        [(r.status, r.error) for r in runs.values()]
    assert not raylaunch.poll(store)  # nothing left for Ray to report
