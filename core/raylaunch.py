"""The Ray launcher: each run the lab's queue starts becomes one Ray task (``LAB_RAY_ADDRESS``).

The queue stays the lab's (``jobs.dispatch`` claims runs in the store's order, within
``LAB_MAX_JOBS``); Ray only executes. A claimed run is handed to the lab's **launcher**, a
detached actor on the head node (one per run store, found by name), which submits
``execute(run_id)`` with ``num_cpus`` = the job's CPUs. The launcher owns the tasks, so they
outlive whoever dispatched them (a web server restart, a CLI, a worker that just ended).
The task runs the worker's own entry point, ``core.worker.main``, in a Ray worker process
used for that one task (``max_calls=1``: its memory returns to the machine, as locally).

Liveness and cancel, on top of the store's heartbeat (``store.STALE_S``):

* ``poll`` asks the launcher which tasks ended without the worker recording a final status
  (the node died, the process was killed, a forced cancel): those runs become
  ``interrupted`` (``cancelled`` when a cancel was asked), and the queue goes on; runs whose
  task Ray still holds but has not started yet get a heartbeat, so waiting for a CPU is not
  mistaken for death.
* ``cancel`` lets the store's flag stop the run at its next batch, as locally; a task still
  running ``CANCEL_GRACE_S`` later is cancelled by Ray (``ray.cancel(force=True)``).

Ray is imported only here, and only when LAB_RAY_ADDRESS is set: ``auto``, ``ray://host:port``
or a head's ``host:port``. Every node needs this project at the same path (its .venv too).
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from typing import Any

from core import paths
from core.store import CANCELLED, INTERRUPTED, RUNNING, RunNotFound, RunStore

NAMESPACE = "lstm-lab"
CANCEL_GRACE_S = 10.0  # a running task that ignores the store's cancel flag this long is killed
# (LAB_CANCEL_GRACE_S overrides)
HEAD_RESOURCE = "node:__internal_head__"  # Ray's marker resource of the head node
# What a worker on another machine needs to know of this lab (passed with each task).
PASS_ENV = ("LAB_HOME", "LAB_DB_URL", "LAB_DB_RETRY_S", "LAB_ARTIFACTS", "LAB_CACHE",
            "IMDB_DATA", "LAB_OFFLINE", "LAB_NATIVE", "LAB_MAX_JOBS", "LAB_JOB_CPUS",
            "LAB_RAY_ADDRESS", "LAB_FAULT", "TF_CPP_MIN_LOG_LEVEL")


def address() -> str | None:
    return os.environ.get("LAB_RAY_ADDRESS", "").strip() or None


def enabled() -> bool:
    return address() is not None


def job_cpus() -> int:
    """CPUs a job asks of Ray (``LAB_JOB_CPUS``, default 1): TensorFlow's threads."""
    try:
        return max(1, int(os.environ.get("LAB_JOB_CPUS", 1)))
    except ValueError:
        return 1


def connect():
    """The ``ray`` module, connected to LAB_RAY_ADDRESS (already connected inside a task)."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address(), namespace=NAMESPACE, log_to_driver=False,
                 logging_level="ERROR", configure_logging=False)
    return ray


def _worker_env(home) -> dict[str, str]:
    env = {k: os.environ[k] for k in PASS_ENV if k in os.environ}
    env["LAB_HOME"] = str(home)
    return env


def execute(run_id: str, env: dict[str, str]) -> int:
    """The task body, in a Ray worker process: the lab's worker entry point for one run."""
    import ray

    os.environ.update(env)
    os.environ["LAB_RAY_NODE_ID"] = ray.get_runtime_context().get_node_id()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    if str(paths.PROJECT_ROOT) not in sys.path:
        sys.path.insert(0, str(paths.PROJECT_ROOT))
    from core import worker

    # No address-space cap inside a Ray worker (it maps Ray's shared object store); Ray's
    # memory monitor guards the node instead.
    return worker.main(run_id, limited=True)


class Launcher:
    """Owns the lab's tasks (a detached actor: it outlives the processes that dispatch)."""

    def __init__(self) -> None:
        import ray

        self.ray = ray
        self.remote = ray.remote(max_calls=1, max_retries=0)(execute)
        self.tasks: dict[str, Any] = {}
        self.lock = threading.Lock()

    def launch(self, run_id: str, env: dict[str, str], cpus: int) -> None:
        ref = self.remote.options(num_cpus=cpus, name=f"lab-run-{run_id}").remote(run_id, env)
        with self.lock:
            self.tasks[run_id] = ref

    def cancel(self, run_id: str, grace_s: float) -> bool:
        """Force-cancel the run's task after ``grace_s`` unless it has ended by then."""
        with self.lock:
            ref = self.tasks.get(run_id)
        if ref is None:
            return False
        timer = threading.Timer(grace_s, self._force, (ref,))
        timer.daemon = True
        timer.start()
        return True

    def _force(self, ref) -> None:
        ready, _ = self.ray.wait([ref], timeout=0)
        if not ready:
            self.ray.cancel(ref, force=True)

    def poll(self) -> tuple[list[tuple[str, str]], list[str]]:
        """(runs whose task ended with an error, and why; runs whose task Ray still holds).
        Ended tasks are forgotten once reported."""
        with self.lock:
            items = list(self.tasks.items())
        if not items:
            return [], []
        refs = [ref for _, ref in items]
        ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0)
        ready_set = set(ready)
        ended, live = [], []
        for run_id, ref in items:
            if ref not in ready_set:
                live.append(run_id)
                continue
            with self.lock:
                self.tasks.pop(run_id, None)
            try:
                self.ray.get(ref, timeout=5)
            except Exception as exc:  # noqa: BLE001 - the reason is reported, not raised
                ended.append((run_id, f"{type(exc).__name__}: {str(exc).strip()[:400]}"))
        return ended, live

    def ping(self) -> str:
        return self.ray.get_runtime_context().get_node_id()


def _name(store: RunStore) -> str:
    ident = store.db_url or str(store.db_path.resolve())
    return "launcher-" + hashlib.sha1(ident.encode()).hexdigest()[:12]


def launcher(store: RunStore):
    """The lab's launcher actor, started on the head node if it is not running yet."""
    ray = connect()
    cls = ray.remote(Launcher)
    return cls.options(
        name=_name(store), namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
        num_cpus=0, max_concurrency=16, resources={HEAD_RESOURCE: 0.001},
        runtime_env={"env_vars": {"PYTHONPATH": str(paths.PROJECT_ROOT)}}).remote()


def launch(store: RunStore, run_id: str) -> None:
    ray = connect()
    ray.get(launcher(store).launch.remote(run_id, _worker_env(store.home), job_cpus()))


def cancel(store: RunStore, run_id: str, grace_s: float | None = None) -> bool:
    if grace_s is None:
        grace_s = float(os.environ.get("LAB_CANCEL_GRACE_S", CANCEL_GRACE_S))
    ray = connect()
    return ray.get(launcher(store).cancel.remote(run_id, grace_s))


def poll(store: RunStore) -> list[str]:
    """Apply Ray's view of the lab's tasks to the store; returns the runs it ended."""
    ray = connect()
    ended, live = ray.get(launcher(store).poll.remote())
    finished = []
    for run_id, reason in ended:
        try:
            run = store.get(run_id, reap=False)
        except RunNotFound:
            continue
        status = CANCELLED if run.cancel_requested else INTERRUPTED
        if store.finish(run_id, status, error=f"The Ray task of this run ended without "
                        f"finishing it (its node died, its worker was killed, or a cancel "
                        f"was forced): {reason}"):
            finished.append(run_id)
    for run_id in live:  # held by Ray but not started by a worker yet: waiting, not dead
        try:
            run = store.get(run_id, reap=False)
        except RunNotFound:
            continue
        if run.status == RUNNING and run.pid is None:
            store.heartbeat(run_id)
    return finished


def max_jobs_default() -> int:
    """Without LAB_MAX_JOBS: as many jobs as the cluster's CPUs hold."""
    ray = connect()
    return max(1, int(ray.cluster_resources().get("CPU", 1) // job_cpus()))


def stop_local(folder: str) -> int:
    """Stop the Ray processes of a local demo cluster (those whose command line names its
    temp ``folder``, and their children), by process id; returns how many."""
    import psutil

    me = {os.getpid(), os.getppid()}
    procs: dict[int, Any] = {}
    for p in psutil.process_iter(["cmdline"]):
        if p.pid in me or not any(folder in a for a in (p.info["cmdline"] or [])):
            continue
        try:
            for q in (p, *p.children(recursive=True)):
                procs[q.pid] = q
        except psutil.Error:
            continue
    for p in procs.values():
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(list(procs.values()), timeout=10)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    return len(procs)


if __name__ == "__main__":  # python -m core.raylaunch stop-local FOLDER (scripts/cluster-demo.sh)
    if len(sys.argv) == 3 and sys.argv[1] == "stop-local":
        print(f"stopped {stop_local(sys.argv[2])} Ray processes")
    else:
        sys.exit("usage: python -m core.raylaunch stop-local FOLDER")
