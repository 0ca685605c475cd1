"""Training slots on this machine: one job at a time with all cores, or one job per core.

The same queue of small jobs (the seed LSTM on 1,000 reviews, 1 epoch, 1,000 test reviews:
what a class submits) is drained by the real queue and fresh worker processes, once with
LAB_MAX_JOBS=1 and 2 TensorFlow threads per job and once with LAB_MAX_JOBS=2 and 1 thread
each, alternating per round. Throughput = jobs / (last end - first submit).

    .venv/bin/python bench/max_jobs.py [--jobs 6] [--rounds 2]
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import common
import numpy as np

VARIANTS = {"1 job x 2 threads": ("1", "2"), "2 jobs x 1 thread": ("2", "1")}


def drain(n_jobs: int, max_jobs: str, threads: str) -> dict:
    """Submit n_jobs at once to a fresh lab home and wait for the queue to empty."""
    from core import jobs
    from core.config import preset
    from core.store import COMPLETED, RunStore

    os.environ.update(LAB_MAX_JOBS=max_jobs, LAB_JOB_THREADS=threads, LAB_WARM_WORKERS="0")
    store = RunStore(Path(tempfile.mkdtemp(prefix="max-jobs-")))
    cfg = preset("seed-lstm", train_size=1000, test_size=1000, epochs=1)
    ids = [jobs.submit(store, cfg) for _ in range(n_jobs)]
    while any(r.active for r in store.list_runs()):
        jobs.dispatch(store)
        time.sleep(0.2)
    runs = [store.get(i) for i in ids]
    assert all(r.status == COMPLETED for r in runs), [r.error for r in runs]
    wall = max(r.ended_at for r in runs) - min(r.created_at for r in runs)
    return {"wall": wall, "per_min": 60 * n_jobs / wall,
            "train": float(np.median([r.results["train_seconds"] for r in runs]))}


def main() -> None:
    args = common.flags(__doc__, jobs=6, rounds=2)
    os.environ.setdefault("LAB_CACHE", str(common.ROOT / "bench" / "out" / "cache"))
    from core.data import load_dataset

    load_dataset()  # the encoded-data cache is built before anything is timed
    got: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for i in range(args.rounds):
        names = list(VARIANTS) if i % 2 == 0 else list(reversed(VARIANTS))
        for name in names:
            got[name].append(drain(args.jobs, *VARIANTS[name]))
    base = np.median([r["per_min"] for r in got[next(iter(VARIANTS))]])
    rows = [[name, " / ".join(f"{r['wall']:.1f}" for r in runs),
             " / ".join(f"{r['per_min']:.2f}" for r in runs),
             f"{np.median([r['per_min'] for r in runs]) / base:.2f}x",
             f"{np.median([r['train'] for r in runs]):.1f}"] for name, runs in got.items()]
    body = (f"{args.jobs} jobs submitted at once (seed LSTM, 1,000 reviews, 1 epoch, 1,000 test "
            f"reviews), fresh workers, {args.rounds} rounds alternating.\n\n"
            + common.table(["slots x threads", "wall s (each round)", "jobs/min",
                            "vs 1 x 2 (median)", "median training s per job"], rows))
    common.write_section("max_jobs", "13. Training slots: 1 job x 2 threads vs 2 jobs x 1 "
                         "thread", body)


if __name__ == "__main__":
    main()
