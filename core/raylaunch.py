"""The Ray launcher: each run the lab's queue starts runs in a process of its own on a Ray
node (``LAB_RAY_ADDRESS``).

The queue stays the lab's (``jobs.dispatch`` claims runs in the store's order, within
``LAB_MAX_JOBS``); Ray only executes. A claimed run is handed to the lab's **launcher**, a
detached actor on the head node (one per run store, found by name), which owns everything
below, so runs outlive whoever dispatched them (a web server restart, a CLI, a worker that
just ended):

1. A **placement group** of one bundle, ``{"CPU": LAB_JOB_CPUS}`` (default 1): Ray picks the
   node and holds the job's CPUs there for as long as the job runs, as it would for a task.
2. An **executor** on that node: an actor (0 CPUs of its own: the bundle holds them) that has
   imported TensorFlow and loaded the native kernels, sized its thread pools to the job's
   CPUs, runs the worker's own entry point (``core.worker.main``) for exactly one run, and is
   then ended (``ray.actor.exit_actor``): one job per process, so its memory returns to the
   machine, as locally.
3. **Warm executors** (``LAB_WARM_WORKERS``, on unless 0, as for local workers in
   ``core.warm``): when a run starts on a node, the launcher starts one spare executor there
   (unless one is waiting), which loads once that run has its first batch (not to delay it)
   and then waits, at most ``LAB_WARM_IDLE_S``; the next run placed on that node takes it
   and skips the process start and the imports (seconds). Without it each run gets a new
   executor once placed.
4. **Hand-over**: a worker dispatches the next run as it ends (``jobs.dispatch`` after its
   final status), and its executor tells the launcher so; the next run then takes that
   job's placement group (its CPUs, on its node) at once instead of waiting for Ray to free
   it and place a new one, as a local worker's slot goes to the next run.

Liveness and cancel, on top of the store's heartbeat (``store.STALE_S``):

* The launcher heartbeats each of its runs until the run's worker has started (recorded its
  pid): waiting for a CPU or for an executor is not mistaken for death, whether or not a page
  or a CLI is dispatching meanwhile.
* ``poll`` asks the launcher which runs ended without their worker recording a final status
  (the node died, the process was killed, a forced cancel): those runs become
  ``interrupted`` (``cancelled`` when a cancel was asked), and the queue goes on.
* ``cancel`` lets the store's flag stop the run at its next batch, as locally; an executor
  still running ``CANCEL_GRACE_S`` later is killed through Ray (``ray.kill``), and a run
  still waiting for a CPU is dropped at once.

Ray is imported only here, and only when LAB_RAY_ADDRESS is set: ``auto``, ``ray://host:port``
or a head's ``host:port``. Every node needs this project at the same path (its .venv too).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import threading
import time
from typing import Any

from core import paths
from core.store import CANCELLED, HEARTBEAT_S, INTERRUPTED, RUNNING, RunNotFound, RunStore

NAMESPACE = "lstm-lab"
CANCEL_GRACE_S = 10.0  # a running job that ignores the store's cancel flag this long is killed
# (LAB_CANCEL_GRACE_S overrides)
HEAD_RESOURCE = "node:__internal_head__"  # Ray's marker resource of the head node
PRUNE_S = 10.0  # the launcher looks at its spare executors this often (idle ones leave)
# What a worker on another machine needs to know of this lab (passed with each run).
PASS_ENV = ("LAB_HOME", "LAB_DB_URL", "LAB_DB_RETRY_S", "LAB_ARTIFACTS", "LAB_CACHE",
            "IMDB_DATA", "LAB_OFFLINE", "LAB_NATIVE", "LAB_MAX_JOBS", "LAB_JOB_CPUS",
            "LAB_RAY_ADDRESS", "LAB_FAULT", "LAB_WARM_WORKERS", "LAB_WARM_IDLE_S",
            "TF_CPP_MIN_LOG_LEVEL")


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
    """The ``ray`` module, connected to LAB_RAY_ADDRESS (already connected inside Ray).

    The project's folder goes on the Python path of every Ray worker this connection's job
    starts (the launcher, the executors), so they import ``core`` from it: a ``runtime_env``
    would do the same, but Ray then starts each worker through an extra interpreter (its
    setup_worker), a third of a second more per executor here."""
    import ray
    from ray.job_config import JobConfig

    if ray.is_initialized():
        return ray
    # A private JobConfig field (ray is pinned): what Ray itself fills with the driver's
    # working folder for the same purpose.
    sys_path = [str(paths.PROJECT_ROOT)]
    if address().startswith("ray://"):
        # Ray Client (a web server outside the cluster): ray.init would send its arguments
        # as JSON, which a JobConfig is not; the client's builder carries it instead. The
        # cluster's machines hold the project at the same path, as with a driver.
        _connect_client(ray, sys_path)
    else:
        ray.init(address=address(), namespace=NAMESPACE, log_to_driver=False,
                 logging_level="ERROR", configure_logging=False,
                 job_config=JobConfig(_py_driver_sys_path=sys_path))
    return ray


def _connect_client(ray, sys_path: list[str], attempts: int = 3) -> None:
    """Connect through Ray Client. Its server starts a server process per client, which
    now and then exits at once on a loaded head ("SpecificServer startup failed"): try
    again, then give up with Ray's message."""
    for attempt in range(1, attempts + 1):
        builder = ray.client(address(), _deprecation_warn_enabled=False).namespace(NAMESPACE)
        builder._job_config._py_driver_sys_path = sys_path
        try:
            builder.connect()
            return
        except ConnectionAbortedError:
            if attempt == attempts:
                raise
            time.sleep(1.0)


def _worker_env(home) -> dict[str, str]:
    env = {k: os.environ[k] for k in PASS_ENV if k in os.environ}
    env["LAB_HOME"] = str(home)
    return env


def _apply_env(env: dict[str, str]) -> None:
    """This process takes the lab's settings ``env`` (ones it lacks are unset)."""
    for key in PASS_ENV:
        if key in env:
            os.environ[key] = env[key]
        else:
            os.environ.pop(key, None)


_current_run: str | None = None  # in an executor: its run (it dispatches the next at its end)


class Executor:
    """One run's process on a Ray node: loaded ahead, runs one job, then is ended."""

    def __init__(self, env: dict[str, str], cpus: int, after: str | None = None) -> None:
        """Load for a job of ``cpus`` CPUs; a spare first waits until run ``after`` (the one
        whose start made it) has its first batch, as a local warm worker does."""
        _apply_env(env)
        # The job's CPUs are its threads (Ray gives a 0-CPU actor OMP_NUM_THREADS=1).
        os.environ["LAB_JOB_THREADS"] = os.environ["OMP_NUM_THREADS"] = str(cpus)
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        from core import worker

        if after:
            store = RunStore()
            with contextlib.suppress(Exception):  # the store unreachable: load at once
                worker.wait_until_started(store, after)
            store.close()
        worker.preload()
        worker.set_threads()  # before TensorFlow's first op: for the default preset's kind

    def ready(self) -> int:
        return os.getpid()

    def run(self, run_id: str, env: dict[str, str]) -> int:
        """The lab's worker entry point for one run (its final status goes to the store)."""
        import ray

        global _current_run

        _apply_env(env)  # this run's settings (LAB_FAULT, ...), not the spare's
        os.environ["LAB_RAY_NODE_ID"] = ray.get_runtime_context().get_node_id()
        _current_run = run_id
        from core import worker

        # No address-space cap inside a Ray worker (it maps Ray's shared object store); Ray's
        # memory monitor guards the node instead.
        return worker.main(run_id, limited=True)

    def exit(self) -> None:
        import ray

        ray.actor.exit_actor()


class _Job:
    """A run the launcher owns: its CPUs (placement group), then its executor."""

    def __init__(self, run_id: str, env: dict[str, str], cpus: int, group) -> None:
        self.run_id, self.env, self.cpus, self.group = run_id, env, cpus, group
        self.node: str | None = None  # where its CPUs are
        self.executor = None
        self.launched = time.time()
        self.claimed: float | None = None  # the run's claim (from the store)
        self.freed = False  # its worker has finished (its executor is dispatching, then exits)
        self.forced = False  # a cancel was forced through Ray
        self.done = False
        self.error: str | None = None  # why the job ended without its worker's final word


class _Spare:
    """A node's spare executor: it loads once run ``after`` has its first batch."""

    def __init__(self, key: tuple, handle, after: str) -> None:
        self.key, self.handle, self.after = key, handle, after
        self.ready = handle.ready.remote()  # resolves once it has loaded
        self.created = time.monotonic()


class Launcher:
    """Owns the lab's jobs and spare executors (a detached actor: it outlives the processes
    that dispatch; the executors it starts end with it)."""

    def __init__(self) -> None:
        import ray

        self.ray = ray
        self.executor_cls = ray.remote(Executor)
        self.jobs: dict[str, _Job] = {}
        self.spares: dict[str, _Spare] = {}  # node id -> its spare executor
        self.lock = threading.Lock()
        self.store: RunStore | None = None
        threading.Thread(target=self._prune_loop, daemon=True, name="prune").start()

    # -- runs -----------------------------------------------------------------------------
    def launch(self, run_id: str, env: dict[str, str], cpus: int,
               after: str | None = None) -> None:
        """Start ``run_id`` (asked by the executor of run ``after`` as it ends: that run's
        CPUs go straight to this one, as a local worker's slot goes to the next run)."""
        from ray.util.placement_group import placement_group

        _apply_env(env)  # this store's settings: the launcher heartbeats its runs
        if self.store is None:
            with contextlib.suppress(Exception):
                self.store = RunStore(env.get("LAB_HOME"))
        group, node = self._take_over(cpus, after)
        job = _Job(run_id, env, cpus, group or placement_group([{"CPU": cpus}]))
        job.node = node
        with self.lock:
            self.jobs[run_id] = job
        threading.Thread(target=self._drive, args=(job,), daemon=True,
                         name=f"run-{run_id}").start()

    def _take_over(self, cpus: int, after: str | None) -> tuple[Any, str | None]:
        """(placement group, node) of a job whose worker has finished (its executor said so
        as it dispatched: its process and node are alive) but whose CPUs are still held,
        ``after``'s first: handed over to a new run, as a local worker's slot goes to the
        next run (the finished job will not remove it); (None, None) when there is none."""
        with self.lock:
            for prev in sorted(self.jobs.values(), key=lambda j: j.run_id != after):
                if prev.freed and prev.group is not None and prev.node and prev.cpus == cpus:
                    group, prev.group = prev.group, None
                    return group, prev.node
        return None, None

    def _drive(self, job: _Job) -> None:
        """Wait for the job's CPUs, start it in an executor on their node, wait for its end."""
        from ray.util.placement_group import placement_group_table, remove_placement_group

        ray, executor = self.ray, None
        try:
            handed_over = job.node is not None
            while not handed_over and not job.group.wait(timeout_seconds=HEARTBEAT_S):
                if job.forced:
                    raise RuntimeError("cancelled while it waited for a CPU")
                self._beat(job)
            placed = time.time()
            if not handed_over:
                job.node = placement_group_table(job.group)["bundles_to_node_id"][0]
            node = job.node
            executor, kind = self._checkout(node, job)
            with self.lock:
                job.executor = executor
            if job.forced:
                raise RuntimeError("cancelled before it started")
            ref = executor.run.remote(job.run_id, job.env)
            self._ensure_spare(node, job)  # it loads once this run has its first batch
            self._record(job, kind, placed, handed_over)
            started = False
            while not ray.wait([ref], timeout=HEARTBEAT_S)[0]:
                started = started or self._beat(job)
            ray.get(ref)  # raises when the executor died (its node, a kill, a forced cancel)
            executor.exit.remote()  # one job per process: its memory returns to the node
        except Exception as exc:  # noqa: BLE001 - the reason is reported, not raised
            why = f"{type(exc).__name__}: {str(exc).strip()[:400]}"
            job.error = ("the cancel was forced through Ray (the worker did not stop): " + why
                         if job.forced else why)
            if executor is not None:  # whatever went wrong, its process goes
                with contextlib.suppress(Exception):
                    ray.kill(executor, no_restart=True)
        finally:
            with self.lock:  # unless handed over to the run this one dispatched
                group, job.group = job.group, None
            if group is not None:
                with contextlib.suppress(Exception):
                    remove_placement_group(group)
            job.done = True

    def _beat(self, job: _Job) -> bool:
        """Heartbeat the run until its worker has started; True once it has (or has
        ended): its own heartbeat takes over."""
        if self.store is None:
            return True
        try:
            run = self.store.get(job.run_id, reap=False)
            job.claimed = run.started_at
            if run.status != RUNNING or run.pid is not None:
                return True
            self.store.heartbeat(job.run_id)
        except Exception:  # noqa: BLE001 - a store outage: the worker rides it out
            pass
        return False

    def _record(self, job: _Job, kind: str, placed: float, handed_over: bool) -> None:
        """How the run was started (its results' ``ray``): claim -> the launcher's call, the
        wait for its CPUs, whether they were placed by Ray or handed over by the run that
        dispatched it, and which executor took it (a loaded spare, one still loading, new)."""
        if self.store is None:
            return
        with contextlib.suppress(Exception):
            if job.claimed is None:
                job.claimed = self.store.get(job.run_id, reap=False).started_at
            self.store.update_results(job.run_id, ray={
                "to_launcher_s": round(job.launched - job.claimed, 3),
                "cpu_wait_s": round(placed - job.launched, 3), "executor": kind,
                "cpus": "handed over" if handed_over else "placed"})

    def cancel(self, run_id: str, grace_s: float) -> bool:
        """Kill the run's executor after ``grace_s`` unless it has ended by then (at once when
        the run has not started: no worker reads the store's flag yet)."""
        with self.lock:
            job = self.jobs.get(run_id)
        if job is None:
            return False
        if job.executor is None:
            grace_s = 0.0
        timer = threading.Timer(grace_s, self._force, (job,))
        timer.daemon = True
        timer.start()
        return True

    def _force(self, job: _Job) -> None:
        with self.lock:
            if job.done:
                return
            job.forced = True
            executor = job.executor
        if executor is not None:
            self.ray.kill(executor, no_restart=True)

    def poll(self, finished: str | None = None) -> list[tuple[str, str]]:
        """Runs whose job ended without their worker's final status, and why (forgotten once
        reported, as are jobs that ended well). ``finished``: the run of the executor asking,
        whose worker has recorded its final status (its CPUs may go to the next run)."""
        ended = []
        with self.lock:
            if finished in self.jobs:
                self.jobs[finished].freed = True
            for run_id, job in list(self.jobs.items()):
                if job.done:
                    del self.jobs[run_id]
                    if job.error is not None:
                        ended.append((run_id, job.error))
        return ended

    # -- executors ------------------------------------------------------------------------
    def _new_executor(self, node: str, env: dict[str, str], cpus: int,
                      after: str | None = None):
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        return self.executor_cls.options(
            num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
        ).remote(env, cpus, after)

    @staticmethod
    def _key(job: _Job) -> tuple:
        """What a spare must share with the job it takes (set before it loaded)."""
        return job.cpus, job.env.get("LAB_NATIVE"), job.env.get("TF_CPP_MIN_LOG_LEVEL")

    def _checkout(self, node: str, job: _Job) -> tuple[Any, str]:
        """(executor, kind): the node's spare if it fits and lives ("spare", or "loading
        spare" while it still imports), else a new one ("new"; a spare still waiting for
        the first batch of the run that made it stays for the next run)."""
        with self.lock:
            spare = self.spares.get(node)
        if spare is not None:
            kind = self._state(spare) if spare.key == self._key(job) else None
            if kind != "waiting spare":
                with self.lock:
                    taken = self.spares.get(node) is spare
                    if taken:
                        del self.spares[node]
                if taken and kind is not None:
                    return spare.handle, kind
                if taken:
                    self.ray.kill(spare.handle, no_restart=True)
        return self._new_executor(node, job.env, job.cpus), "new"

    def _state(self, spare: _Spare) -> str | None:
        """"spare" (loaded: it answers at once), "loading spare" (importing: it takes the
        run once loaded), "waiting spare" (it has not begun: the run that made it has no
        first batch yet), or None (it failed to load, died since, or hangs)."""
        ray = self.ray
        if not ray.wait([spare.ready], timeout=0)[0]:
            try:
                run = self.store.get(spare.after, reap=False) if self.store else None
                if run and run.status == RUNNING and not self.store.metric_count(
                        spare.after, "batch"):
                    return "waiting spare"
            except Exception:  # noqa: BLE001 - take it: it loads within START_WAIT_S
                pass
            return "loading spare"
        try:
            ray.get(spare.handle.ready.remote(), timeout=5)
            return "spare"
        except Exception:  # noqa: BLE001
            return None

    def _ensure_spare(self, node: str, job: _Job) -> None:
        from core import warm

        if not warm.enabled():  # LAB_WARM_WORKERS=0 (this store's setting)
            return
        with self.lock:
            if node in self.spares:
                return
            self.spares[node] = _Spare(
                self._key(job), self._new_executor(node, job.env, job.cpus, job.run_id),
                job.run_id)

    def _prune_loop(self) -> None:
        while True:
            time.sleep(PRUNE_S)
            with contextlib.suppress(Exception):
                self.prune()

    def prune(self, idle_s: float | None = None) -> int:
        """End spares idle longer than ``LAB_WARM_IDLE_S`` (or that failed to load)."""
        from core import warm

        idle_s = warm.idle_limit() if idle_s is None else idle_s
        now, gone = time.monotonic(), []
        with self.lock:
            for node, spare in list(self.spares.items()):
                failed = False
                if self.ray.wait([spare.ready], timeout=0)[0]:
                    try:
                        self.ray.get(spare.ready, timeout=0)
                    except Exception:  # noqa: BLE001
                        failed = True
                if failed or now - spare.created > idle_s:
                    gone.append(self.spares.pop(node).handle)
        for handle in gone:
            with contextlib.suppress(Exception):
                self.ray.kill(handle, no_restart=True)
        return len(gone)

    def spares(self) -> dict[str, str | None]:
        """Node id -> the state of its spare executor (see ``_state``); for benchmarks."""
        with self.lock:
            spares = dict(self.spares)
        return {node: self._state(spare) for node, spare in spares.items()}

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
        num_cpus=0, max_concurrency=16, resources={HEAD_RESOURCE: 0.001}).remote()


def launch(store: RunStore, run_id: str) -> None:
    ray = connect()
    ray.get(launcher(store).launch.remote(run_id, _worker_env(store.home), job_cpus(),
                                          _current_run))


def cancel(store: RunStore, run_id: str, grace_s: float | None = None) -> bool:
    if grace_s is None:
        grace_s = float(os.environ.get("LAB_CANCEL_GRACE_S", CANCEL_GRACE_S))
    ray = connect()
    return ray.get(launcher(store).cancel.remote(run_id, grace_s))


def poll(store: RunStore) -> list[str]:
    """Apply Ray's view of the lab's jobs to the store; returns the runs it ended."""
    ray = connect()
    # In an executor, only the worker's last act polls (jobs.dispatch, after its final status).
    ended = ray.get(launcher(store).poll.remote(_current_run))
    finished = []
    for run_id, reason in ended:
        try:
            run = store.get(run_id, reap=False)
        except RunNotFound:
            continue
        status = CANCELLED if run.cancel_requested else INTERRUPTED
        if store.finish(run_id, status, error=f"The Ray job of this run ended without "
                        f"finishing it (its node died, its process was killed, or a cancel "
                        f"was forced): {reason}"):
            finished.append(run_id)
    return finished


def stop(store: RunStore) -> None:
    """End the store's launcher, its spare executors and any job still running (tests,
    benchmarks: a launcher otherwise lives as long as the cluster)."""
    ray = connect()
    with contextlib.suppress(ValueError):
        ray.kill(ray.get_actor(_name(store), namespace=NAMESPACE), no_restart=True)


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
