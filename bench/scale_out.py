"""Scale out: tiny-job throughput, local launcher vs a local two-node Ray cluster, and a
projection for a class on k machines.

Both launchers run the same tiny jobs (tests/conftest.py TINY, demo data) on the same kind of
store (a fresh PostgreSQL database each): the local launcher (worker processes on this
machine, two at a time) and Ray (two nodes of one CPU, ray.cluster_utils.Cluster: the same
two cores). Three modes, each treating both sides alike:

* cold: N jobs at once, a new process per job on both sides (``LAB_WARM_WORKERS=0``);
* warm: N jobs at once, each side's default: a process that loaded TensorFlow ahead takes a
  job when one is waiting (core/warm.py locally, a spare executor per node on Ray);
* one at a time: two jobs to warm up, then M jobs one after another, each submitted once
  the side has loaded processes waiting (a worker locally; a spare on every Ray node): the
  launchers' own overhead, with no process start on either side.

The variants alternate for ``--rounds`` rounds (the CPU is shared: drift hits both), with the
cluster up throughout, so its idle daemons load both sides alike. Per job it reads from the
store: claim -> final status (the job's whole time once the queue gave it a slot), its time
outside the job's own work (claim -> job code, plus the final write), training, and which
process took it: a loaded one (waiting, TensorFlow imported), a loading one (a Ray spare
still importing) or a new one.

The projection is arithmetic on paper: a class of S students each training the three seed
presets on the full data, one job at a time per 2-core machine, on k machines, greedy
(longest job first onto the freest machine); each job costs its measured whole-run time
(BENCHMARKS.md section 6, fast mode where it applies) plus the measured Ray overhead per job.

    .venv/bin/python bench/scale_out.py [--jobs 6] [--one-at-a-time 4] [--rounds 3]
                                        [--students 30]
"""

from __future__ import annotations

import heapq
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil
from common import ROOT, flags, table, write_section

sys.path.insert(0, str(ROOT / "tests"))  # the throwaway PostgreSQL server of the tests

# Whole-run seconds of the seed presets on the full data on this 2-core machine, one job at a
# time (BENCHMARKS.md section 6, "whole reproduce wall times", fast mode; the LSTM + Dropout
# trains the plain way: the plain LSTM's time).
PRESET_SECONDS = {"seed-lstm": 109.0, "seed-lstm-dropout": 282.0, "seed-cnn-lstm": 96.0}
TINY = {"architecture": "lstm", "top_words": 100, "maxlen": 40, "embedding_dim": 8, "units": 4,
        "epochs": 1, "batch_size": 32, "train_size": 256, "test_size": 128,
        "validation_split": 0.25, "seed": 1}
NODES = 2
MODES = ("cold", "warm", "one at a time")
LOADED_BEFORE_S = 1.0  # a local job's process created this long before its claim: a warm
# worker's (psutil's process start times are whole-second accurate)
LOADED_WAIT_S = 120.0  # one at a time: the longest wait for loaded processes
OUT = ROOT / "bench" / "out" / "scale_out.json"


def submit(store, label: str, i: int) -> str:
    from core import jobs
    from core.config import load_config

    return jobs.submit(store, load_config({**TINY, "seed": i, "name": f"{label} {i}"}))


def drain(store, ids: list[str]) -> None:
    from core import jobs

    while any(r.id in ids for r in jobs.refresh(store)):
        time.sleep(0.2)


def loaded_waiting(store, side: str) -> bool:
    """Does the side have loaded processes waiting: a warm worker locally, a loaded spare on
    every node on Ray?"""
    from core import raylaunch, warm

    if side == "local":
        return any(warm.folder(store.home).glob("*.ready"))
    ray = raylaunch.connect()
    states = ray.get(raylaunch.launcher(store).spares.remote())
    return sum(s == "spare" for s in states.values()) >= NODES


def run_jobs(side: str, mode: str, n: int, label: str) -> list[dict]:
    """Run n tiny jobs in ``mode`` on the lab configured in os.environ; each job's timings."""
    from core import jobs
    from core.store import COMPLETED, RunStore

    store = RunStore()
    if mode == "one at a time":
        drain(store, [submit(store, label + " warm-up", i) for i in range(NODES)])
        ids = []
        for i in range(n):
            deadline = time.monotonic() + LOADED_WAIT_S
            while not loaded_waiting(store, side) and time.monotonic() < deadline:
                jobs.refresh(store)
                time.sleep(0.2)
            ids.append(submit(store, label, i))
            drain(store, ids[-1:])
    else:
        ids = [submit(store, label, i) for i in range(n)]
        drain(store, ids)
    runs = [store.get(i) for i in ids]
    bad = [(r.id, r.status, (r.error or "")[-300:]) for r in runs if r.status != COMPLETED]
    if bad:
        raise SystemExit(f"{label}: runs did not complete: {bad}")
    out = []
    for r in runs:
        phases = r.results.get("phases") or {}
        own = sum(v for k, v in phases.items() if k != "start")  # the job's own work
        busy = r.ended_at - r.started_at
        ray_info = r.results.get("ray")
        if ray_info:
            process = {"spare": "loaded", "loading spare": "loading"}.get(
                ray_info["executor"], "new")
        else:
            early = (r.pid_started or r.started_at) < r.started_at - LOADED_BEFORE_S
            process = "loaded" if early else "new"
        out.append({"busy": busy, "outside": busy - own, "train": r.results["train_seconds"],
                    "process": process, "created": r.created_at, "ended": r.ended_at,
                    "node": r.env.get("ray_node"), "ray": ray_info, "phases": phases})
    store.close()
    return out


def ray_cpu_seconds() -> float:
    """CPU seconds used so far by this process's Ray daemons (its cluster's GCS, raylets,
    agents; not the jobs' processes)."""
    total = 0.0
    for p in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(p.cmdline())
            if "ray::" in cmd or "core.worker" in cmd or "default_worker" in cmd:
                continue
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            continue
    return total


def makespan(durations: list[float], machines: int) -> float:
    """Longest job first onto the machine that frees first."""
    free = [0.0] * machines
    for d in sorted(durations, reverse=True):
        heapq.heappush(free, heapq.heappop(free) + d)
    return max(free)


def med(xs) -> float:
    xs = list(xs)
    return statistics.median(xs) if xs else float("nan")


def main() -> None:
    args = flags(__doc__, jobs=6, one_at_a_time=4, rounds=3, students=30)
    os.environ["IMDB_DATA"] = "demo"  # tiny jobs: the built-in demo set
    os.environ.update(LAB_MAX_JOBS=str(NODES), LAB_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="2")
    # Ray starts its workers at nice 15; the local launcher's run at this process's priority.
    # The same for both (the CPU is shared with other work): Ray's workers at ours too.
    os.environ["RAY_worker_niceness"] = "0"  # noqa: SIM112 - Ray's own spelling
    import ray
    from ray.cluster_utils import Cluster

    from core import raylaunch, warm
    from core.store import RunStore
    from pgserver import PgServer

    tmp = Path(tempfile.mkdtemp(prefix="scale-out-"))
    os.environ["LAB_CACHE"] = str(tmp / "cache")
    pg = PgServer()
    t0 = time.perf_counter()
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 1, "include_dashboard": False})
    for _ in range(NODES - 1):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    start_s = time.perf_counter() - t0
    jobs_by: dict[tuple[str, str], list[dict]] = {}
    walls: dict[tuple[str, str], list[float]] = {}
    loads: dict[tuple[str, str], list[float]] = {}
    idle_ray_cpu = idle_wall = 0.0
    try:
        for rnd in range(args.rounds):
            for m, mode in enumerate(MODES):
                sides = ("local", "Ray") if (rnd + m) % 2 == 0 else ("Ray", "local")
                for side in sides:
                    label = f"{side} {mode} r{rnd}"
                    slug = label.replace(" ", "_")
                    os.environ.update(LAB_HOME=str(tmp / slug), LAB_DB_URL=pg.new_database(slug),
                                      LAB_WARM_WORKERS="0" if mode == "cold" else "1")
                    if side == "Ray":
                        os.environ["LAB_RAY_ADDRESS"] = cluster.address
                    else:
                        os.environ.pop("LAB_RAY_ADDRESS", None)
                    cpu0, w0 = ray_cpu_seconds(), time.perf_counter()
                    n = args.one_at_a_time if mode == "one at a time" else args.jobs
                    runs = [{**r, "round": rnd} for r in run_jobs(side, mode, n, label)]
                    if side == "local":
                        idle_ray_cpu += ray_cpu_seconds() - cpu0
                        idle_wall += time.perf_counter() - w0
                    jobs_by.setdefault((side, mode), []).extend(runs)
                    walls.setdefault((side, mode), []).append(
                        max(r["ended"] for r in runs) - min(r["created"] for r in runs))
                    loads.setdefault((side, mode), []).append(os.getloadavg()[0])
                    store = RunStore()
                    if side == "Ray":
                        raylaunch.stop(store)  # its spare executors go too
                    warm.stop_all(store.home)
                    store.close()
                    print(f"{label}: median claim->final {med(r['busy'] for r in runs):.2f} s, "
                          f"load {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        os.environ.pop("LAB_RAY_ADDRESS", None)
        ray.shutdown()
        cluster.shutdown()
        pg.close()
        os.environ.pop("LAB_HOME", None)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({f"{s} {m}": v for (s, m), v in jobs_by.items()}, indent=1))

    def measured_runs(side: str, mode: str, rnd: int | None = None) -> list[dict]:
        runs = [r for r in jobs_by[(side, mode)] if rnd is None or r["round"] == rnd]
        if mode == "one at a time":  # the launchers' own overhead: loaded processes only
            runs = [r for r in runs if r["process"] == "loaded"] or runs
        return runs

    def busy(side: str, mode: str, rnd: int | None = None) -> float:
        return med(r["busy"] for r in measured_runs(side, mode, rnd))

    rows = []
    for mode in MODES:
        for side in ("local", "Ray"):
            runs, w = measured_runs(side, mode), walls[(side, mode)]
            procs = [sum(r["process"] == k for r in jobs_by[(side, mode)])
                     for k in ("loaded", "loading", "new")]
            nodes = len({r["node"] for r in runs if r["node"]})
            name = "local launcher" if side == "local" else f"Ray, {NODES} nodes x 1 CPU"
            at_once = mode != "one at a time"
            rows.append([f"{name}, {mode}",
                         " / ".join(f"{x:.1f}" for x in w) if at_once else "-",
                         f"{args.jobs / med(w) * 60:.1f}" if at_once else "-",
                         " / ".join(f"{busy(side, mode, k):.2f}" for k in range(args.rounds)),
                         " / ".join(map(str, procs)),
                         f"{med(r['outside'] for r in runs):.2f}",
                         f"{med(r['train'] for r in runs):.2f}", nodes or "-",
                         " / ".join(f"{x:.1f}" for x in loads[(side, mode)])])
    measured = table(["variant", "wall s (each round)", "jobs/min (median)",
                      "median claim -> final s (each round)",
                      "processes: loaded / loading / new", "median s outside the job",
                      "median training s", "Ray nodes used",
                      "load avg (1 min) after each round"], rows)

    def overhead(mode: str) -> str:
        """Ray's extra claim -> final time per job in each round (the two sides of a round
        ran back to back), then the median round's."""
        secs = [busy("Ray", mode, k) - busy("local", mode, k) for k in range(args.rounds)]
        pcts = [x / busy("local", mode, k) * 100 for k, x in enumerate(secs)]
        return (f"{med(secs):+.2f} s, **{med(pcts):+.1f} %** (each round: "
                + ", ".join(f"{x:+.0f} %" for x in pcts) + ")")

    ray_runs = [r for (side, _), rs in jobs_by.items() if side == "Ray" for r in rs if r["ray"]]
    handed = sum(r["ray"].get("cpus") == "handed over" for r in ray_runs)
    ray_extra = med(busy("Ray", "one at a time", k) - busy("local", "one at a time", k)
                    for k in range(args.rounds))
    ray_extra = 0.0 if math.isnan(ray_extra) else max(0.0, ray_extra)
    jobs_all = [s for s in PRESET_SECONDS.values() for _ in range(args.students)]
    proj = []
    for k in (1, 2, 4, 8):
        local = makespan(jobs_all, k) if k == 1 else None
        on_ray = makespan([d + ray_extra for d in jobs_all], k) + start_s
        proj.append([k, f"{len(jobs_all)}", f"{local / 3600:.2f} h" if local else "-",
                     f"{on_ray / 3600:.2f} h", f"{makespan(jobs_all, 1) / on_ray:.1f}x"])
    projection = table(["machines (2 cores each)", "jobs", "one machine, local launcher",
                        "Ray cluster", "speed-up vs one machine"], proj)
    body = f"""Tiny jobs (TINY of tests/conftest.py on the demo set, one epoch) on this 2-core
machine, each variant on a fresh PostgreSQL database; {args.rounds} rounds, the order
alternating. **cold**: {args.jobs} jobs at once, a new process per job on both sides
(`LAB_WARM_WORKERS=0`). **warm**: {args.jobs} jobs at once, each side's default (a waiting
worker locally, one per lab home; a spare executor per Ray node), starting with none loaded.
**one at a time**: {NODES} jobs to warm up, then {args.one_at_a_time} one after another, each submitted once
loaded processes wait on each side; its row counts only jobs that a loaded process took.
Both sides' workers run at this script's priority (Ray's default is nice 15:
`RAY_worker_niceness=0` here). The Ray cluster (start-up {start_s:.1f} s, once) stays up
during the local variants too: its idle daemons used {idle_ray_cpu / max(idle_wall, 1e-9) * 100:.0f} % of a core meanwhile, a
load both sides share. Claim -> final: from the queue giving the run a slot to its final
status.

{measured}

Ray's overhead per job, against the local launcher on the same store (median claim -> final
in each round, Ray minus local; the median round's figure, as the CPU's load shifts between
rounds):

- **one at a time, a loaded process waiting on both sides** (the launchers' own cost):
  {overhead('one at a time')}.
- **warm, {args.jobs} at once** (both defaults): {overhead('warm')}. Back-to-back tiny jobs
  outrun the warm-up (a spare loads once the run that made it has its first batch): locally
  a run that finds no loaded worker gets a new process; on Ray it takes the node's spare even
  while it still loads. {handed} of {len(ray_runs)} Ray jobs took the CPUs of the run that
  had just ended (no wait for Ray to free and re-place them).
- **cold, {args.jobs} at once** (a new process per job on both sides): {overhead('cold')}: a Ray
  worker process starts slower than a plain interpreter (it imports Ray and registers with
  its node) before it imports TensorFlow.
- Tiny jobs are dominated by their fixed costs (process, TensorFlow, tracing the first
  batch, evaluation, saving): training is ~{med(r['train'] for r in jobs_by[('local', 'cold')]):.0f} s of each; a real job's
  minutes make any of these differences small.

**Projection on paper**: {args.students} students x 3 seed presets on the full data = {len(jobs_all)}
jobs, each costing its whole-run time on one 2-core machine (seed LSTM {PRESET_SECONDS['seed-lstm']:.0f} s, LSTM +
Dropout {PRESET_SECONDS['seed-lstm-dropout']:.0f} s, CNN + LSTM {PRESET_SECONDS['seed-cnn-lstm']:.0f} s; BENCHMARKS.md section 6: a note, hand-run 2026-11-29) plus Ray's
one-at-a-time overhead of {ray_extra:.2f} s per job (0 when negative: jobs of minutes find their
node's spare loaded), one job per machine at a time, longest first, plus the cluster's
start-up once. It ignores the store's load (90 jobs write ~2 metric batches a second each:
far below what one PostgreSQL server takes) and the data cache's first fill on each machine.

{projection}"""
    write_section("scale-out", "11. Scale out: local launcher vs Ray, and a class on k machines",
                  body)


if __name__ == "__main__":
    main()
