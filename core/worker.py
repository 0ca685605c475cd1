"""Worker process entry point: ``python -m core.worker RUN_ID`` or ``--warm``.

Runs one claimed run to a final status, whatever happens, then starts the next queued job.
A warm worker (``core.warm``) imports TensorFlow and loads the native kernels first, keeps the
dataset view and prepares the likeliest run's model (``core.warmstart``), then waits for
``jobs.dispatch`` to hand it its run.
"""

from __future__ import annotations

import os
import resource
import sys
import time
import traceback

import psutil

from core import jobs, paths, warm, warmstart
from core.config import TrainConfig, preset
from core.db import is_lost_connection, patience
from core.guard import MEMORY_ADVICE
from core.store import (
    CANCELLED,
    COMPLETED,
    DIVERGED,
    FAILED,
    PARTIAL_MODEL_FILE,
    RUNNING,
    RunNotFound,
    RunStore,
)
from core.training import RAY_NODE_ENV, Heartbeat, Progress, run_training, where

# Address-space cap for one worker, as a share of physical memory (LAB_WORKER_MEMORY_GB
# overrides): an oversized job then fails with "out of memory" instead of drawing the
# kernel's OOM killer onto the server. A training worker maps ~2.6 GiB at the seed's size.
WORKER_MEMORY_SHARE = 0.75
FINAL_WRITE_S = 300.0  # a lost PostgreSQL server has this long to return for the final status
START_WAIT_S = 60.0  # a warm worker waits at most this long for the run before it to start
NEEDED_POLL_S = 0.5  # a loaded warm worker looks this often whether its head start is wanted
OOM_MARKERS = ("ResourceExhaustedError", "MemoryError", "OOM when allocating",
               "std::bad_alloc", "Cannot allocate memory")


def limit_memory() -> int:
    """Apply the worker's address-space cap; returns it in bytes."""
    try:
        cap = int(float(os.environ["LAB_WORKER_MEMORY_GB"]) * 2**30)
    except (KeyError, ValueError):
        cap = int(psutil.virtual_memory().total * WORKER_MEMORY_SHARE)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    return cap


def describe_failure(trace: str, cap: int, exc: BaseException | None = None) -> str:
    """The traceback, led by a plain reason when the job ran out of memory or lost its
    run store."""
    if exc is not None and is_lost_connection(exc):
        return ("the run store's PostgreSQL server could not be reached (LAB_DB_URL); the "
                "worker retried its writes for LAB_DB_RETRY_S seconds, then gave up.\n\n"
                + trace)
    if any(marker in trace for marker in OOM_MARKERS):
        return (f"out of memory: the job needed more than this server's {cap / 2**30:.1f} GiB "
                f"per job (LAB_WORKER_MEMORY_GB); try {MEMORY_ADVICE}.\n\n"
                + trace)
    return trace


def job_threads() -> int:
    """TensorFlow threads for one job: ``LAB_JOB_THREADS``, else the cores shared out among
    the ``LAB_MAX_JOBS`` jobs that may run at once (bench/max_jobs.py compares the splits)."""
    try:
        return max(1, int(os.environ["LAB_JOB_THREADS"]))
    except (KeyError, ValueError):
        return max(1, (os.cpu_count() or 1) // jobs.max_jobs())


def set_threads(cfg: TrainConfig | None = None) -> None:
    """Size TensorFlow's thread pools for ``cfg``'s run (else the default preset's): after
    :func:`preload`, before the first op (the pools are sized once, at that op).

    Between ops (inter-op), the job's threads. Within one op (intra-op), as many, except
    where fast mode trains on the native kernels: there each batch's halves already run
    side by side on the inter-op threads, and splitting the small ops around them (the
    embedding's gathers and transposes, the loss) across threads cost more CPU in fork and
    join than it saved (bench/thread_split.py, section 1d). Plain fit and the XLA loops
    keep theirs: their matmuls and the bag models' embedding updates use them."""
    import tensorflow as tf

    from core import fast

    n = job_threads()
    native_run = fast.trains_native(cfg or preset(warmstart.DEFAULT_PRESET))
    tf.config.threading.set_intra_op_parallelism_threads(1 if native_run else n)
    tf.config.threading.set_inter_op_parallelism_threads(n)


def main(run_id: str, limited: bool = False) -> int:
    cap = limit_memory() if not limited else resource.getrlimit(resource.RLIMIT_AS)[0]
    store = RunStore()
    run = store.get(run_id, reap=False)
    if run.status != RUNNING:
        return 0  # cancelled while queued or claimed by someone else: nothing to do
    if not limited:  # a warm worker did both before loading; a Ray actor's threads are Ray's
        preload()
        set_threads(run.config)
    if run.pid != os.getpid():
        store.set_worker(run_id, os.getpid())  # started by hand or on Ray, not by dispatch
    if os.environ.get(RAY_NODE_ENV):  # say where at once (training records the rest)
        store.set_env(run_id, where())
    progress = Progress()
    beat = Heartbeat(store, run_id, progress)
    beat.start()
    status, error = FAILED, None
    try:
        status = run_training(store, run_id, progress)
    except BaseException as exc:  # noqa: BLE001 - record every failure, then exit
        error = describe_failure(traceback.format_exc(), cap, exc)
        if isinstance(exc, KeyboardInterrupt):
            status = CANCELLED
    finally:
        with patience(FINAL_WRITE_S):  # the final status outwaits a store outage
            beat.stop()
            store.finish(run_id, status, error=error,
                         progress={**progress.snapshot(), "stage": status})
        (store.run_dir(run_id) / PARTIAL_MODEL_FILE).unlink(missing_ok=True)
        jobs.dispatch(store)
    return 0 if status in (COMPLETED, CANCELLED, DIVERGED) else 1


def preload() -> None:
    """What every job needs before its first batch, done while no job waits for it."""
    import keras  # noqa: F401 - the import is the point

    from core import fast, native, training  # noqa: F401

    native.enabled()  # builds (first time) and loads the kernels unless switched off


def wait_until_started(store: RunStore, run_id: str, timeout: float = START_WAIT_S,
                       handed=lambda: False) -> None:
    """Until ``run_id`` (the run whose start made this warm worker) has its first batch or
    has ended: a warm worker loading TensorFlow meanwhile would delay that batch. Not
    beyond the moment this worker is ``handed()`` a run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not handed():
        try:
            run = store.get(run_id, reap=False)
        except RunNotFound:
            return
        if run.status != RUNNING or store.metric_count(run_id, "batch"):
            return
        time.sleep(0.2)


def wait_until_needed(store: RunStore, run_id: str, handed=lambda: False) -> None:
    """Until a loaded warm worker's preparation is wanted: ``run_id`` (the run whose start
    made it) has ended, a run waits in the queue, or this worker was ``handed()`` a run
    (which it then runs at once). Until then preparing would only slow ``run_id`` down, on
    a machine whose cores it uses."""
    while not handed():
        try:
            run = store.get(run_id, reap=False)
        except RunNotFound:
            return
        if run.status != RUNNING or store.queue_order():
            return
        time.sleep(NEEDED_POLL_S)


def prepare(store: RunStore, cfg=None) -> None:
    """A warm worker's head start (core/warmstart.py): the dataset view kept and padded,
    and ``cfg``'s model (else the likeliest run's) built and traced. A failure here only
    costs that head start."""
    t0 = time.monotonic()
    try:
        cfg = cfg or warmstart.likeliest_config(store)
        loaded = warmstart.keep_data(cfg)
        done = warmstart.prepare(cfg)
        print(f"warm worker {os.getpid()}: data {loaded:.1f} s; {done}; ready after "
              f"{time.monotonic() - t0:.1f} s", flush=True)
    except Exception:  # noqa: BLE001 - the run then reads and builds everything itself
        warmstart.forget()
        print(f"warm worker {os.getpid()}: nothing prepared\n{traceback.format_exc()}",
              flush=True)


class Reprepare:
    """A ready warm worker's look at the queue (``warm.wait_for_run``'s refresh): when
    the next queued run is not the kind it prepared for, and has stayed so for two looks
    in a row (a class's burst of submissions reorders the queue for a moment),
    it prepares again, so the run it is handed finds its model traced."""

    def __init__(self) -> None:
        self.seen: str | None = None  # the next run's graph key at the last look
        self.tried: str | None = None  # the last one prepared here (a failure is not retried)

    def __call__(self) -> bool:
        store = RunStore()  # opened per look: none is held open while this worker idles
        try:
            cfg = warmstart.next_config(store)  # nothing queued: keep what is prepared
            key = None if cfg is None else warmstart.graph_key(cfg)
            wanted = (key is not None and key == self.seen and key != self.tried
                      and warmstart.stale(cfg))
            self.seen = key
            if wanted:
                self.tried = key
                prepare(store, cfg)  # the run just read, not a second look at the queue
            return wanted
        finally:
            store.close()


def warm_main(after: str | None = None) -> int:
    """Load, then prepare the next run (core/warmstart.py) once that is wanted, then wait
    for a run; a run handed over while starting skips the rest (it builds its own)."""
    limit_memory()
    store, home = RunStore(), paths.lab_home()

    def handed() -> bool:
        return warm.handed(home)

    if after:
        wait_until_started(store, after, handed=handed)
    preload()
    set_threads(warmstart.likeliest_config(store))  # a run of another kind still runs
    if after:
        wait_until_needed(store, after, handed)
    if not handed():
        prepare(store)
    store.close()  # the run opens its own; none is held open while this worker idles
    run_id = warm.wait_for_run(home, refresh=Reprepare())
    return 0 if run_id is None else main(run_id, limited=True)


if __name__ == "__main__":
    if sys.argv[1] == warm.FLAG:
        sys.exit(warm_main(*sys.argv[2:3]))
    sys.exit(main(sys.argv[1]))
