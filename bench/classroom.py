"""Classroom load: N students' tabs on one real dashboard server, measured from outside.

A class opens the lab at once: every student loads the Train page, launches a small job
with the form, watches it learn live, then scores a review on the Predict page. This
starts the real server (``streamlit run app.py``, its own LAB_HOME) and plays N such tabs
with the protocol-level client in bench/stclient.py (one asyncio process: light enough for
30 tabs on 2 cores), then reports what a teacher needs to size the machine:

- server CPU per tab while tabs sit on a page with no job active ("idle") and while every
  tab watches a live run ("watching"): psutil on the server process and its children,
  training workers excepted (they are reported apart);
- first-render time (connect -> the first full script run finished), p50/p95;
- server RSS before the tabs connect and after the lessons;
- jobs completed, exception elements seen, batch metric rows lost (rows in the store vs
  ceil(n_fit / batch_size) * epochs batches, loss and accuracy each);
- training speed: one job launched from a tab that then closes (0 watching) vs the
  first job of the lessons (N watching).

    .venv/bin/python bench/classroom.py --sessions 1 8 30 \
        --data ../shared/data/aclImdb_v1_labeled.tar.gz --out bench/out/classroom.json
    .venv/bin/python bench/classroom.py --markdown bench/out/classroom.json   # the table

The tests run it with 4 tabs and tiny jobs on the demo data (tests/test_classroom_load.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import common  # noqa: F401 - puts the project root on sys.path
import psutil
from stclient import ProtocolError, Tab

from app_pages.views import FIELD_LABELS
from core import inference, warm
from core.store import CANCELLED, COMPLETED, DIVERGED, RunStore

# What the harness looks for on the pages (labels, never widget ids).
PRESET_LABEL = "seed LSTM"  # the tutorial's LSTM preset button on Train
LAUNCH_LABEL = "Launch training"
REVIEW_LABEL, SCORE_LABEL = "Your review", "Score"  # Predict's form
PROBABILITY_LABEL = "P(positive)"  # the metric Predict shows per model
END_ALERTS = {"Completed": COMPLETED, "Stopped": CANCELLED, "Diverged": DIVERGED,
              "The run ": "failed"}  # alert texts of the live view once the run has ended
REVIEW = "A wonderful, moving film: the cast is brilliant, though the ending drags a little."
# A small job: the seed LSTM preset on 1,000 reviews (test 1,000), one epoch.
BENCH_JOB = {"train_size": 1000, "test_size": 1000, "epochs": 1}
# The job every tab watches at the end (train speed, 0 vs N watching): longer than a tab's
# own, so that its training time is not mostly noise.
WATCH_JOB = {"epochs": 3}
WATCH_ROUNDS = 2  # solo and watched, alternated
WATCH_CAP_S = 900  # a tab that never sees its run end is an error, not a hang
IDLE_S = 12.0  # tabs sit on Train this long, no job active, while the server CPU is read
SAMPLE_S = 0.5  # CPU sampling period
EMPTY_S = 3.0  # the server alone, before any tab
SERVER_START_S = 90
PAGE_TIMEOUT_S = 180  # one page load or click, on a busy machine (the first imports TF)
JOB_TIMEOUT_S = 240  # per queued job: TensorFlow import in the worker + training


class Server:
    """``streamlit run app.py`` on a free port with its own LAB_HOME; stop() kills it and
    every training worker it (or a worker after it) started."""

    def __init__(self, home: Path, data: str, cache: str, app_dir: Path = common.ROOT) -> None:
        self.home, self.port = home, _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "LAB_HOME": str(home), "IMDB_DATA": data, "LAB_CACHE": cache,
               "LAB_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        home.mkdir(parents=True, exist_ok=True)
        self.log_path = home / "server.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streamlit", "run", "app.py",
                 "--server.headless", "true", "--server.port", str(self.port),
                 "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
                 "--server.fileWatcherType", "none"],
                cwd=app_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            try:
                with urllib.request.urlopen(self.url + "/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("streamlit did not start:\n"
                                   + self.log_path.read_text(errors="replace")[-3000:])
            time.sleep(0.3)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout=wait)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        if (self.home / "runs.db").exists():
            stop_workers(RunStore(self.home))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_workers(store: RunStore) -> None:
    """Workers, warm workers and the inference process are detached (their own session):
    cancel every active run and kill them all, so none outlives the benchmark."""
    warm.stop_all(store.home)
    inference.stop(store.home)
    for run in store.list_runs(reap=False):
        if run.active:
            store.request_cancel(run.id)
            if run.pid and _is_worker(run.pid):
                try:
                    os.kill(run.pid, signal.SIGKILL)
                except OSError:
                    pass
    store.close()


def _is_worker(pid: int) -> bool:
    """A process doing model work (a training worker, or the inference process that serves
    Predict): the server's cost is measured without them."""
    try:
        cmd = " ".join(psutil.Process(pid).cmdline())
        return "core.worker" in cmd or "core.inference" in cmd
    except psutil.Error:
        return False


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _cpu(proc: psutil.Process) -> float:
    """The process's own CPU seconds (children_* excluded: dead workers fold in there)."""
    t = proc.cpu_times()
    return t.user + t.system


class Monitor:
    """Samples CPU seconds of the server (with its non-worker children) and of training
    workers, each sample labelled with the phase the benchmark is in."""

    def __init__(self, server_pid: int, store: RunStore) -> None:
        self.server, self.store = psutil.Process(server_pid), store
        self.phase = "start"
        self.worker_cpu: dict[int, float] = {}  # pid -> CPU seconds last seen
        self.worker_pids: set[int] = set()  # once a worker, always counted as one
        self.samples: list[tuple[float, float, float, str]] = []  # (t, server, workers, phase)

    def _procs(self) -> tuple[list[psutil.Process], list[psutil.Process]]:
        """(server side, workers): workers are found by command line and by run pids."""
        self.worker_pids |= {r.pid for r in self.store.list_runs(reap=False)
                             if r.pid and _is_worker(r.pid)}
        server, workers = [self.server], []
        for p in self.server.children(recursive=True):
            if p.pid in self.worker_pids or _is_worker(p.pid):
                self.worker_pids.add(p.pid)
                workers.append(p)
            elif _alive(p):  # a zombie (an exited worker not yet reaped) is nobody's
                server.append(p)
        for pid in self.worker_pids - {p.pid for p in workers}:
            if psutil.pid_exists(pid) and _is_worker(pid):
                workers.append(psutil.Process(pid))
        return server, workers

    def sample(self, phase: str) -> None:
        server, workers = self._procs()
        cpu = 0.0
        for p in server:
            try:
                cpu += _cpu(p)
            except psutil.Error:
                pass
        for p in workers:
            try:
                self.worker_cpu[p.pid] = _cpu(p)
            except psutil.Error:
                pass
        self.samples.append((time.monotonic(), cpu, sum(self.worker_cpu.values()), phase))

    def rss_mb(self) -> float:
        total = 0
        for p in self._procs()[0]:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total / 2**20

    async def run(self, phase_of) -> None:
        while True:
            self.sample(phase_of())
            await asyncio.sleep(SAMPLE_S)

    def usage(self, phase: str) -> dict[str, float]:
        """CPU used in one phase, as cores (CPU seconds per second), server and workers."""
        seconds = server = workers = 0.0
        for a, b in zip(self.samples, self.samples[1:]):
            if a[3] == phase and b[3] == phase:
                seconds += b[0] - a[0]
                server += b[1] - a[1]
                workers += b[2] - a[2]
        if seconds <= 0:
            return {"seconds": 0.0, "server_cores": None, "worker_cores": None}
        return {"seconds": round(seconds, 1), "server_cores": server / seconds,
                "worker_cores": workers / seconds}


# -- one student --------------------------------------------------------------------------
async def fill(tab: Tab, job: dict[str, float]) -> None:
    """Press the LSTM preset and type the job's sizes into the form."""
    await tab.press(PRESET_LABEL, timeout=PAGE_TIMEOUT_S)
    for field, value in job.items():
        tab.set_number(FIELD_LABELS[field], value)
    await tab.rerun(timeout=PAGE_TIMEOUT_S)  # the values commit (blur), the summary redraws


async def launch(tab: Tab) -> str:
    """Press Launch training; returns the new run's id (the page puts it in ?run=)."""
    await tab.press(LAUNCH_LABEL, timeout=PAGE_TIMEOUT_S)
    run_id = tab.query_param("run")
    if not run_id:
        raise ProtocolError(f"{tab.name}: no ?run= after launching; alerts {tab.texts('alert')}")
    return run_id


def run_ended(tab: Tab) -> str | None:
    """The final status the live view shows, once the run has ended."""
    for text in tab.texts("alert"):
        for prefix, status in END_ALERTS.items():
            if text.startswith(prefix):
                return status
    return None


async def score(tab: Tab, run_id: str) -> str:
    """Open Predict on this run (the Train page's link does the same) and score REVIEW."""
    await tab.goto("predict", f"run={run_id}", timeout=PAGE_TIMEOUT_S)
    tab.set_text(REVIEW_LABEL, REVIEW)
    await tab.press(SCORE_LABEL, timeout=PAGE_TIMEOUT_S)
    found = await tab.until(lambda: [m.body for m in tab.shown("metric")
                                     if m.label == PROBABILITY_LABEL], 30, PROBABILITY_LABEL)
    return found[0]


async def lesson(tab: Tab, job: dict[str, float], watch_timeout: float,
                 together: asyncio.Barrier) -> dict:
    """Fill the form, launch a job, watch it live to its end, score a review with it.
    The class presses Launch together (``together``), so that every tab watches while
    the first job trains: that window measures the cost of watching."""
    out: dict = {"tab": tab.name}
    try:
        try:
            await fill(tab, job)
        finally:
            await together.wait()  # a tab that failed still lets the others go
        out["run_id"] = await launch(tab)
        tab.state, t0 = "watching", time.monotonic()
        out["status"] = await tab.until(lambda: run_ended(tab), watch_timeout, "end of the run")
        out["watch_s"] = round(time.monotonic() - t0, 1)
        tab.state = "predict"
        if out["status"] == COMPLETED:
            out["probability"] = await score(tab, out["run_id"])
    except (ProtocolError, OSError, websocket_closed()) as exc:
        out["error"] = str(exc) or type(exc).__name__
    tab.state = "done"
    return out


def websocket_closed() -> type[Exception]:
    import websockets

    return websockets.ConnectionClosed


# -- one class ----------------------------------------------------------------------------
async def solo_job(url: str, store: RunStore, job: dict[str, float]
                   ) -> tuple[str, float]:
    """A job launched from a tab that then closes: trains with no tab watching. Returns
    the run id and the tab's first render (the server's first page: cold caches)."""
    tab = Tab(url, "solo")
    try:
        cold = await tab.open("train", timeout=PAGE_TIMEOUT_S)
        await fill(tab, job)
        run_id = await launch(tab)
    finally:
        await tab.close()
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:  # the run ended, then its worker exits
        run = store.get(run_id)
        if not run.active and not (run.pid and _is_worker(run.pid)):
            break
        await asyncio.sleep(0.5)
    return run_id, cold


async def watched_job(tabs: list[Tab], store: RunStore, job: dict[str, float],
                      mon: Monitor) -> str:
    """One job that every tab watches live: the first tab launches it from Train, the others
    open Train on it (?run=, as the launcher's link does), all until it ends. The server's
    CPU counts as "one run watched" only while every tab has it on screen."""
    await tabs[0].goto("train", timeout=PAGE_TIMEOUT_S)
    await fill(tabs[0], job)
    run_id = await launch(tabs[0])
    await asyncio.gather(*(t.goto("train", f"run={run_id}", timeout=PAGE_TIMEOUT_S)
                           for t in tabs[1:]))
    mon.phase = "one run watched"
    await asyncio.gather(*(t.until(lambda t=t: run_ended(t), JOB_TIMEOUT_S, "end of the run")
                           for t in tabs))
    mon.phase = "after"
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:  # as solo_job: its worker has exited
        run = store.get(run_id)
        if not run.active and not (run.pid and _is_worker(run.pid)):
            break
        await asyncio.sleep(0.5)
    return run_id


async def one_run_watched(server: Server, store: RunStore, tabs: list[Tab], mon: Monitor,
                          job: dict[str, float]) -> dict:
    """The same job trained with no tab watching and with all N tabs watching it,
    alternated WATCH_ROUNDS times (a drift in the machine's load hits both alike)."""
    runs: dict[str, list[str]] = {"0": [], "n": []}
    for _ in range(WATCH_ROUNDS):
        mon.phase = "solo"
        runs["0"].append((await solo_job(server.url, store, job))[0])
        mon.phase = "one run setup"
        runs["n"].append(await watched_job(tabs, store, job, mon))
    mon.phase = "after"
    checked = {k: [check_job(store, r) for r in ids] for k, ids in runs.items()}
    train = {k: [j["train_s"] for j in jobs] for k, jobs in checked.items()}
    return {"job": job, "runs": runs, "train_s": train,
            "statuses": [j["status"] for jobs in checked.values() for j in jobs],
            "rows_lost": sum(j.get("lost", 0) for jobs in checked.values() for j in jobs),
            "speed_ratio": statistics.median(train["0"]) / statistics.median(train["n"])}


async def lessons(server: Server, n: int, job: dict[str, float], idle_s: float,
                  baseline: bool) -> dict:
    """The phases, in order: no tab; one job with no tab watching; N tabs connect; they
    sit on Train (idle); each launches, watches, scores. CPU is sampled throughout."""
    store = RunStore(server.home)
    mon = Monitor(server.proc.pid, store)
    tabs = [Tab(server.url, f"s{i}") for i in range(n)]

    def phase() -> str:
        return "watching" if all(t.state == "watching" for t in tabs) else mon.phase

    sampler = asyncio.create_task(mon.run(phase))
    try:
        rss_before = mon.rss_mb()
        mon.phase = "empty"  # the server's own CPU with no tab: the floor of the others
        await asyncio.sleep(EMPTY_S)
        mon.phase = "solo"
        solo = await solo_job(server.url, store, job) if baseline else (None, None)
        mon.phase = "connect"
        first = await asyncio.gather(*(t.open("train", timeout=PAGE_TIMEOUT_S) for t in tabs))
        mon.phase = "idle"
        await asyncio.sleep(idle_s)
        mon.phase = "lessons"
        together = asyncio.Barrier(n)
        done = await asyncio.gather(*(lesson(t, job, min(JOB_TIMEOUT_S * (n + 1), WATCH_CAP_S),
                                             together)
                                      for t in tabs))
        rss_after = mon.rss_mb()
        watched = await one_run_watched(server, store, tabs, mon, {**job, **WATCH_JOB})
    finally:
        sampler.cancel()
        await asyncio.gather(*(t.close() for t in tabs), return_exceptions=True)
    for tab, out in zip(tabs, done):
        out.update(fragment_runs=tab.fragment_runs, auto_reruns_sent=tab.auto_reruns_sent)
    out = summarize(n, first, done, tabs, mon, store, solo, (rss_before, rss_after))
    out["one_run_watched"] = {**watched, "server_cores":
                              mon.usage("one run watched")["server_cores"]}
    return out


async def classroom(n: int, data: str, cache: str, job: dict[str, float],
                    idle_s: float = IDLE_S, baseline: bool = True,
                    app_dir: Path = common.ROOT) -> dict:
    """One class of n tabs against a fresh server (of the app in ``app_dir``) and LAB_HOME;
    everything it started is stopped before it returns."""
    with tempfile.TemporaryDirectory(prefix="classroom-") as tmp:
        server = Server(Path(tmp) / "lab", data, cache, app_dir)
        try:
            server.wait_healthy()
            result = await lessons(server, n, job, idle_s, baseline)
            if result["errors"] or result["exceptions"]:
                result["server_log_tail"] = server.log_tail()
            return result
        finally:
            server.stop()


# -- what it measured ---------------------------------------------------------------------
def check_job(store: RunStore, run_id: str) -> dict:
    """A run's outcome and its batch rows: the store callback writes a loss and an
    accuracy row per batch, ceil(n_fit / batch_size) batches per epoch."""
    run = store.get(run_id)
    res = run.results or {}
    out = {"run_id": run_id, "status": run.status, "train_s": res.get("train_seconds"),
           "started_at": run.started_at, "rows": store.metric_count(run_id, "batch")}
    if run.status == COMPLETED:
        batches = math.ceil(res["n_train"] / run.config.batch_size) * res["epochs_done"]
        out.update(expected_rows=2 * batches, lost=2 * batches - out["rows"])
    return out


def quantile(values: list[float], q: float) -> float | None:
    """Nearest-rank quantile (no interpolation: with few tabs, a value that was seen)."""
    if not values:
        return None
    ranked = sorted(values)
    return ranked[max(0, math.ceil(q * len(ranked)) - 1)]


NONE = {"server_cores": None}


def per_tab(usage: dict, n: int) -> float | None:
    """Server CPU per tab, in % of one core."""
    return None if usage["server_cores"] is None else 100 * usage["server_cores"] / n


def summarize(n: int, first: list[float], done: list[dict], tabs: list[Tab], mon: Monitor,
              store: RunStore, solo: tuple[str | None, float | None],
              rss: tuple[float, float]) -> dict:
    jobs = [check_job(store, d["run_id"]) for d in done if d.get("run_id")]
    ok = [j for j in jobs if j["status"] == COMPLETED]
    by_start = sorted(ok, key=lambda j: j["started_at"] or 0)
    phases = {p: mon.usage(p) for p in ("empty", "solo", "connect", "idle", "watching",
                                         "lessons")}
    solo_job_ = check_job(store, solo[0]) if solo[0] else None
    return {
        "sessions": n,
        "first_render_s": {"p50": quantile(first, 0.5), "p95": quantile(first, 0.95),
                           "max": max(first), "cold": solo[1]},
        "server_cpu_pct_per_session": {"idle": per_tab(phases["idle"], n),
                                       "watching": per_tab(phases["watching"], n)},
        "phases": phases,
        "server_rss_mb": {"before": round(rss[0], 1), "after": round(rss[1], 1)},
        "jobs": {"launched": len(jobs), "completed": len(ok),
                 "rows_lost": sum(j.get("lost", 0) for j in ok), "runs": jobs},
        "train_s": {"0_watching": solo_job_ and solo_job_["train_s"],
                    "n_watching_first": by_start[0]["train_s"] if by_start else None,
                    "median": statistics.median([j["train_s"] for j in ok]) if ok else None},
        "solo_job": solo_job_,
        "exceptions": [e for t in tabs for e in t.exceptions],
        "errors": [f"{d['tab']}: {d['error']}" for d in done if d.get("error")],
        "tabs": done,
    }


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "—" if value is None else format(value, spec)


def served(tabs: list[dict]) -> str:
    """Fragment runs the server finished per timer rerun the tabs asked for: under 100 %
    the server coalesced requests it could not keep up with (live views update slower)."""
    asked = sum(t.get("auto_reruns_sent", 0) for t in tabs)
    return "—" if not asked else f"{100 * sum(t.get('fragment_runs', 0) for t in tabs) / asked:.0f} %"


def one_run(w: dict | None, n: int) -> list[str]:
    """The columns of the job every tab watched (rounds measured before it existed: —)."""
    if not w:
        return ["—"] * 3
    tries = " / ".join(", ".join(f"{v:.1f}" for v in w["train_s"][k]) for k in ("0", "n"))
    return [tries, f"{100 * w['speed_ratio']:.0f} %",
            fmt(per_tab({"server_cores": w["server_cores"]}, n), ".1f")]


def markdown(result: dict) -> str:
    """The table for BENCHMARKS.md, with the job, command line, machine and date."""
    rows = []
    for r in result["rounds"]:
        cpu, fr, t = r["server_cpu_pct_per_session"], r["first_render_s"], r["train_s"]
        rows.append([r["sessions"], f"{fmt(fr['p50'])} / {fmt(fr['p95'])}", fmt(fr["cold"]),
                     fmt(per_tab(r["phases"].get("empty", NONE), 1), ".1f"),
                     fmt(cpu["idle"], ".1f"), fmt(cpu["watching"], ".1f"),
                     f"{r['server_rss_mb']['before']:.0f} → {r['server_rss_mb']['after']:.0f}",
                     f"{r['jobs']['completed']}/{r['sessions']}", r["jobs"]["rows_lost"],
                     len(r["exceptions"]) + len(r["errors"]),
                     f"{fmt(t['0_watching'], '.1f')} / {fmt(t['n_watching_first'], '.1f')}",
                     fmt(r["phases"]["watching"]["worker_cores"]), served(r["tabs"]),
                     *one_run(r.get("one_run_watched"), r["sessions"])])
    header = ["tabs", "first render p50 / p95 (s)", "fresh server's first page (s)", "server alone (% core)", "server CPU per idle tab (% core)",
              "per watching tab (% core)", "server RSS MB before → after",
              "jobs completed", "batch rows lost", "exceptions + errors",
              "train s, 0 / N watching", "worker + inference cores while watching",
              "timer reruns served", "one run: train s, 0 / N watching (each try)",
              "one run: speed with N watching vs none",
              "one run: server CPU per watching tab (% core)"]
    return (f"Job per tab: seed LSTM preset with {json.dumps(result['job'])}; data "
            f"`{common.project_relative(result['data'])}`; app `{result.get('app', '.')}`.\n\n"
            + common.table(header, rows)
            + f"\n\nMachine: {result['machine']}; {result['load']}.  \n"
            f"Command: `{result['command']}`  \nDate: {result['date']}\n")


# -- command line -------------------------------------------------------------------------
def parse_set(pairs: list[str]) -> dict[str, float]:
    """--set key=value overrides of the job (numbers only: they go into number inputs)."""
    job = dict(BENCH_JOB)
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in FIELD_LABELS:
            raise SystemExit(f"error: --set {key}: not a form field ({', '.join(FIELD_LABELS)})")
        job[key] = float(value) if "." in value else int(value)
    return job


def flags() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, nargs="+", default=[1, 8, 30])
    ap.add_argument("--data", default=str(common.DEFAULT_ARCHIVE) if
                    common.DEFAULT_ARCHIVE.exists() else "demo",
                    help="IMDB_DATA for the server (an archive path, or demo)")
    ap.add_argument("--cache", default=os.environ.get("LAB_CACHE") or str(common.ROOT / ".lab"
                                                                          / "cache"),
                    help="LAB_CACHE for the server: the encoded data, kept between runs")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help=f"job field overrides (default {BENCH_JOB})")
    ap.add_argument("--idle-s", type=float, default=IDLE_S)
    ap.add_argument("--no-baseline", action="store_true",
                    help="skip the job trained with no tab watching")
    ap.add_argument("--out", type=Path, default=common.ROOT / "bench/out/classroom.json")
    ap.add_argument("--app-dir", type=Path, default=common.ROOT,
                    help="run the server of another checkout (e.g. the lab before a change)")
    ap.add_argument("--section", help="also write the table into BENCHMARKS.md as section "
                                      "classroom_SECTION (e.g. before, after)")
    ap.add_argument("--markdown", action="store_true", help="print the BENCHMARKS.md table")
    ap.add_argument("--from", dest="source", type=Path,
                    help="only print the table of a saved result (with --markdown)")
    return ap.parse_args()


def main() -> None:
    args = flags()
    if args.source:
        print(markdown(json.loads(args.source.read_text())))
        return
    job = parse_set(args.set)
    result = {"job": job, "data": args.data, "command": common.command_line(),
              "machine": common.machine_line(), "rounds": [], "app": _app_label(args.app_dir)}
    for n in args.sessions:
        print(f"{n} tabs...", file=sys.stderr, flush=True)
        result["rounds"].append(asyncio.run(classroom(n, args.data, args.cache, job,
                                                      args.idle_s, not args.no_baseline,
                                                      args.app_dir)))
        result.update(load=common.load_line(), date=common.now())
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))  # after every round: partial results
    print(markdown(result) if args.markdown else json.dumps(result["rounds"], indent=2))
    if args.section:
        body = markdown(result).split("\n\nMachine:")[0]  # write_section adds those lines
        common.write_section(f"classroom_{args.section}", f"8. Classroom load ({args.section})",
                             body)


def _app_label(app_dir: Path) -> str:
    """Which code served the pages: the checkout's commit."""
    try:
        return subprocess.run(["git", "-C", str(app_dir), "log", "-1", "--format=%h %s"],
                              capture_output=True, text=True, check=True).stdout.strip()[:90]
    except (OSError, subprocess.CalledProcessError):
        return str(app_dir)


if __name__ == "__main__":
    main()
