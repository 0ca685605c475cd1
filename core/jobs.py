"""The job queue: submit returns a run id at once; workers are separate processes.

There is no scheduler thread. The queue lives in the store: ``dispatch`` claims queued runs
while a slot is free (``LAB_MAX_JOBS``, default 1) and gives each to one worker process (in
its own session, so it outlives the web server that launched it). Each worker dispatches
again when it ends, and every look at the store does too, so the queue drains even when the
process that submitted the jobs is gone.

Warm workers (``core.warm``, on unless ``LAB_WARM_WORKERS=0``): a claimed run goes to a
worker that has already imported TensorFlow and waits, and a new one is started to wait for
the next run; otherwise a fresh interpreter is started for it. One job per process either
way, so a finished job's memory always returns to the system.

Ray (``LAB_RAY_ADDRESS`` set, see ``core.raylaunch``): a claimed run executes in its own Ray
actor on any machine of the cluster instead of a local process; the queue stays this one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from core import access, classroom, groups, paths, raylaunch, reuse, warm
from core.config import ConfigError, TrainConfig, check, validate_seeds
from core.store import ACTIVE, FAILED, RUNNING, Run, RunStore
from core.text import check_probes

DEFAULT_MAX_JOBS = 1  # concurrent trainings; one per 2-core machine


def max_jobs() -> int:
    if raylaunch.enabled() and not os.environ.get("LAB_MAX_JOBS"):
        return raylaunch.max_jobs_default()  # the cluster's CPUs / each job's CPUs
    try:
        return max(1, int(os.environ.get("LAB_MAX_JOBS", DEFAULT_MAX_JOBS)))
    except ValueError:
        return DEFAULT_MAX_JOBS


def _admit(store: RunStore, cfg: TrainConfig, probes: Iterable[str], n_train: int | None,
           n_test: int | None, actor: access.Actor | None) -> list[str]:
    """Everything a submission must pass before anything is stored (ConfigError listing the
    problems otherwise): a nickname in a class, the configuration and the class's caps for
    a student, the probe sentences and the resource budget. Returns the probes."""
    from core.guard import check_budget  # resource guard: refuse what cannot fit

    if access.class_mode(store) and not (actor and (actor.name or actor.instructor)):
        raise ConfigError(["nickname: pick a nickname to train in this class (the sidebar; "
                           "LAB_USER=... on the command line)"])
    check(cfg, n_train, n_test, classroom.student_limits(store, actor))
    probes = list(probes)
    errors = check_probes(probes)
    if errors:
        raise ConfigError(errors)
    check_budget(cfg, n_train, n_test)
    return probes


def submit(store: RunStore, cfg: TrainConfig, probes: Iterable[str] = (),
           n_train: int | None = None, n_test: int | None = None, start: bool = True,
           actor: access.Actor | None = None, group_id: str | None = None,
           group_label: str | None = None) -> str:
    """Validate, queue and (if a slot is free) start a run owned by ``actor``; returns its
    id at once. Raises ConfigError before anything is stored when the config is invalid,
    breaks the class's caps (for a student) or the owner's queue is full (QueueFull).
    With run reuse on, a submission identical to a completed run is answered at once by a
    completed copy of it (core/reuse.py): no worker is started. ``group_id``/``group_label``:
    the seed group the run belongs to (core/groups.py; ``python -m core reproduce``)."""
    probes = _admit(store, cfg, probes, n_train, n_test, actor)
    owner = actor.name if actor else None
    key = reuse.reuse_key(cfg)
    if classroom.load(store).reuse:
        source = store.find_reusable(key)
        if source is not None:
            return store.copy_completed(source, cfg, owner, probes, group_id, group_label)
    run_id = store.create_run(cfg, probes, owner=owner, reuse_key=key,
                              max_queued=classroom.max_queued_per_user(),
                              group_id=group_id, group_label=group_label)
    if start:
        dispatch(store)
    return run_id


def submit_group(store: RunStore, cfg: TrainConfig, n: int, probes: Iterable[str] = (),
                 n_train: int | None = None, n_test: int | None = None, start: bool = True,
                 actor: access.Actor | None = None) -> list[str]:
    """Queue ``n`` runs of ``cfg`` that differ only in their seed (cfg.seed, cfg.seed + 1,
    ...) as one group (core/groups.py); returns their ids, in seed order. The same checks as
    ``submit``, plus the number of seeds (config.GROUP_SEEDS); the owner's queue must have
    room for all of them (QueueFull says how many fit). All are queued or none. With run
    reuse on, a seed that matches a completed run is answered by a completed copy."""
    errors = validate_seeds(cfg.seed, n)
    if errors:
        raise ConfigError(errors)
    probes = _admit(store, cfg, probes, n_train, n_test, actor)
    owner = actor.name if actor else None
    group_id, label = groups.new_group_id(), groups.label(cfg, n)
    members = [(member, reuse.reuse_key(member)) for member in groups.members(cfg, n)]
    reusing = classroom.load(store).reuse
    sources = [store.find_reusable(key) if reusing else None for _, key in members]
    queued = iter(store.create_runs(
        [m for m, source in zip(members, sources) if source is None], probes, owner=owner,
        max_queued=classroom.max_queued_per_user(), group_id=group_id, group_label=label))
    ids = [next(queued) if source is None else
           store.copy_completed(source, member, owner, probes, group_id, label)
           for (member, _), source in zip(members, sources)]
    if start:
        dispatch(store)
    return ids


def spawn(home: Path, args: list[str], log_path: Path) -> int:
    """Start ``python -m core.worker ARGS`` detached for the lab at ``home``, its output
    appended to ``log_path``; returns its pid."""
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    env = dict(os.environ, LAB_HOME=str(home), PYTHONUNBUFFERED="1")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    proc = subprocess.Popen(
        [sys.executable, "-m", "core.worker", *args], cwd=paths.PROJECT_ROOT, env=env,
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    return proc.pid


def spawn_worker(store: RunStore, run_id: str) -> int:
    """A fresh worker for one run; its output goes to the run's log."""
    return spawn(store.home, [run_id], store.run_dir(run_id) / "worker.log")


def dispatch(store: RunStore) -> list[str]:
    """Start queued runs while slots are free; returns the ids started. Keeps one warm
    worker waiting for the next run when warm workers are on (on Ray: each run becomes a
    Ray actor)."""
    on_ray = raylaunch.enabled()
    if on_ray:
        raylaunch.poll(store)  # tasks Ray saw die: their runs end, their slots free up
    store.reap()
    started = []
    while True:
        run = store.claim_next(max_jobs())
        if run is None:
            break
        if on_ray:
            try:
                raylaunch.launch(store, run.id)  # the task records its own pid and node
            except Exception as exc:  # noqa: BLE001 - unreachable cluster, refused task
                store.finish(run.id, FAILED, error=f"could not start the run on Ray: {exc}")
                continue
            started.append(run.id)
            continue
        try:
            pid = warm.hand_over(store.home, run.id) or spawn_worker(store, run.id)
        except OSError as exc:
            store.finish(run.id, FAILED, error=f"could not start the worker process: {exc}")
            continue
        store.set_worker(run.id, pid)
        started.append(run.id)
    if on_ray:
        return started
    # The next warm worker imports TensorFlow once the run just started has its first batch:
    # before that, both would share the two cores and the run would start late.
    warm.ensure(store.home, lambda: spawn(store.home, [warm.FLAG, *started[-1:]],
                                          warm.log_path(store.home)))
    return started


def refresh(store: RunStore) -> list[Run]:
    """What a looker calls: reap dead workers, start queued runs, return active runs."""
    dispatch(store)
    return store.list_runs(ACTIVE, reap=False)


def cancel(store: RunStore, run_id: str, actor: access.Actor | None = None) -> str:
    """Ask a run to stop; returns its status after the request. Only its owner or the
    instructor may (core/access.py): PermissionDenied naming the owner otherwise."""
    access.check_manage(store, actor, store.owner(run_id), run_id, "stop")
    status = store.request_cancel(run_id)
    if status == RUNNING and raylaunch.enabled():
        raylaunch.cancel(store, run_id)  # forced by Ray if the worker does not stop in time
    dispatch(store)
    return status
