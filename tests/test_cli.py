"""The command line: exit codes and one-line errors."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time

from conftest import TINY
from core.config import load_config
from core.paths import PROJECT_ROOT


def cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=PROJECT_ROOT,
                          env=dict(os.environ), capture_output=True, text=True, timeout=timeout)


def test_train_runs_predict_round_trip(lab):
    sets = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]
    done = cli("train", *sets, "--set", "name=cli run")
    exited = time.time()
    assert done.returncode == 0, done.stderr
    assert "completed; test accuracy" in done.stdout
    # Its stderr is a pipe here: it still returns promptly after the run ends (it used to
    # look every 5 s), with a progress line every 5 s at most while the run lasted.
    ended = lab.list_runs()[0]
    assert exited - ended.ended_at < 2.0
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith(("running", "queued", "["))]
    assert len(lines) <= 2 + (ended.ended_at - ended.created_at) / 5
    runs = json.loads(cli("runs", "--json").stdout)
    assert [r["name"] for r in runs] == ["cli run"] and runs[0]["status"] == "completed"
    run_id = runs[0]["id"]
    out = cli("predict", run_id, "a wonderful brilliant film", "--json")
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert 0 < body["probability"] < 1 and body["label"] in ("positive", "negative")
    empty = cli("predict", run_id, "   ")
    assert empty.returncode == 2 and empty.stderr.strip().splitlines()[-1].startswith("error: ")


def test_bad_input_is_one_line_and_exit_2(lab):
    bad = cli("train", "--preset", "seed-lstm", "--set", "units=0", "--set", "dropout=1.5")
    assert bad.returncode == 2
    last = bad.stderr.strip().splitlines()[-1]
    assert last.startswith("error: invalid configuration:") and "units: 0" in last \
        and "dropout: 1.5" in last
    assert json.loads(cli("runs", "--json").stdout) == []  # nothing was queued
    probe = cli("train", "--preset", "seed-lstm", "--probe", "?!?", "--probe", "x" * 501)
    assert probe.returncode == 2
    last = probe.stderr.strip().splitlines()[-1]
    assert "probes: sentence 1 has no words" in last and "501 characters" in last
    assert json.loads(cli("runs", "--json").stdout) == []  # nor with bad probes
    missing = cli("predict", "20990101-000000-abcdef", "good film")
    assert missing.returncode == 2 and "no run with id" in missing.stderr
    noeq = cli("train", "--set", "units")
    assert noeq.returncode == 2 and "key=value" in noeq.stderr


def test_follow_returns_within_a_wake_of_the_end_and_reads_little(lab, monkeypatch):
    """Into a pipe: one progress line per PIPE_SHOW_S, the run's row every WAKE_S, a
    dispatch every DISPATCH_S; it returns within about WAKE_S of the run's end."""
    from core import cli as cli_mod
    from core import jobs
    from core.store import COMPLETED

    run_id = lab.create_run(load_config(TINY))
    lab.claim_next(1)
    calls = {"dispatch": 0, "metrics": 0}
    monkeypatch.setattr(jobs, "dispatch", lambda store: calls.__setitem__(
        "dispatch", calls["dispatch"] + 1))
    metrics = lab.metrics
    monkeypatch.setattr(lab, "metrics", lambda *a, **k: calls.__setitem__(
        "metrics", calls["metrics"] + 1) or metrics(*a, **k))
    ended = []
    threading.Timer(6.0, lambda: (lab.finish(run_id, COMPLETED), ended.append(time.time()))
                    ).start()
    out = io.StringIO()
    run = cli_mod.follow(lab, run_id, out=out)
    returned = time.time()
    assert run.status == COMPLETED and returned - ended[0] < cli_mod.WAKE_S + 0.5
    assert len(out.getvalue().splitlines()) == 3  # at 0 s, 5 s and the end
    assert calls == {"dispatch": 2, "metrics": 3}


def test_train_reads_the_sizes_from_the_data_cache(lab, monkeypatch):
    """The CLI checks a run against the data's sizes from the cache's labels alone."""
    from core import cli as cli_mod
    from core import data

    load = data.load_dataset
    ds = load()  # the cache exists
    monkeypatch.setattr(data, "load_dataset", lambda *a, **k: 1 / 0)
    assert cli_mod._data_sizes() == (len(ds.train), len(ds.test)) == (2000, 2000)
    monkeypatch.setattr(data, "load_dataset", load)
    monkeypatch.setenv("LAB_CACHE", str(lab.home / "empty-cache"))  # no cache: loaded once
    assert cli_mod._data_sizes() == (2000, 2000)
    assert data.cache_path(data.resolve_source()).exists()


def test_data_reports_source_and_reason(lab):
    out = cli("data")
    assert out.returncode == 0
    assert "DEMO" in out.stdout and "IMDB_DATA=demo" in out.stdout and "2,000 reviews" in out.stdout
    summary = json.loads(cli("data", "--json").stdout)
    assert summary["source"] == "demo" and summary["train"]["positive"] == 1000


def test_missing_data_path_is_a_clear_error(lab, monkeypatch, tmp_path):
    monkeypatch.setenv("IMDB_DATA", str(tmp_path / "nowhere"))
    out = cli("data")
    assert out.returncode == 2 and "IMDB_DATA=" in out.stderr and "does not exist" in out.stderr


def test_reproduce_tables_show_mean_spread_and_every_epoch(lab_with_run):
    from core import cli

    store, run_id = lab_with_run
    run = store.get(run_id)
    table = cli.reproduce_table({"seed-lstm": [run, run]})
    acc = 100 * run.results["test_accuracy"]
    assert f"| seed-lstm | 2/2 | {acc:.2f} % |" in table and "| 0.00 |" in table  # std of twins
    assert "87.48 %" in table  # the tutorial's number beside ours
    epochs = cli.epochs_table(store, {"seed-lstm": [run]})
    train = [m["value"] for m in store.metrics(run_id, "train") if m["name"] == "accuracy"]
    assert " → ".join(f"{100 * v:.2f}" for v in train) in epochs


def test_detach_owners_queue_positions_and_permissions(lab, monkeypatch):
    """`train --detach` returns the id at once; `runs --json` shows owner, status, queue
    position and start; another user's cancel/rename/delete exits 2 naming the owner, the
    instructor's succeeds. A run held by this (live) process keeps the queue waiting, so
    nothing trains here."""
    from core import access
    from core.store import CANCELLED, QUEUED, RUNNING

    blocker = lab.create_run(load_config(TINY), owner="Cy")
    lab.claim_next(1)
    lab.set_worker(blocker, os.getpid())
    try:
        monkeypatch.setenv(access.KEY_ENV, "s3cret")
        monkeypatch.setenv("LAB_USER", "Ana")
        sets = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]
        out = cli("train", *sets, "--detach", "--set", "name=detached", timeout=120)
        assert out.returncode == 0, out.stderr
        run_id = out.stdout.strip()
        monkeypatch.delenv(access.KEY_ENV)
        rows = {r["id"]: r for r in json.loads(cli("runs", "--json").stdout)}
        assert rows[run_id]["owner"] == "Ana" and rows[run_id]["status"] == QUEUED
        assert rows[run_id]["queue_position"] == 1 and rows[run_id]["started_at"] is None
        assert rows[blocker]["status"] == RUNNING and rows[blocker]["started_at"] > 0

        monkeypatch.setenv("LAB_USER", "Ben")
        for args in (("cancel", run_id), ("rename", run_id, "x"), ("delete", run_id)):
            refused = cli(*args)
            assert refused.returncode == 2, refused
            last = refused.stderr.strip().splitlines()[-1]
            assert last.startswith("error: ") and "belongs to Ana" in last
        monkeypatch.setenv(access.KEY_ENV, "s3cret")  # Ben holds the instructor key
        assert cli("rename", run_id, "renamed by the teacher").returncode == 0
        assert cli("cancel", run_id).returncode == 0 and cli("delete", run_id).returncode == 0
        monkeypatch.setenv("LAB_USER", "<b>x</b>")
        bad = cli("cancel", blocker)
        assert bad.returncode == 2 and "HTML or markdown" in bad.stderr
    finally:  # before the lab fixture kills the workers of active runs (this process)
        lab.finish(blocker, CANCELLED)


def test_reproduce_records_each_presets_seeds_as_one_group(lab):
    """`reproduce` trains a preset's seeds one after the other as one seed group, so the
    dashboard's scoreboard shows them; its table is printed as before."""
    from core.store import RunStore

    sets = [a for k, v in TINY.items() if k != "seed" for a in ("--set", f"{k}={v}")]
    out = cli("reproduce", "--presets", "seed-lstm", "--seeds", "2", "--first-seed", "3", *sets)
    assert out.returncode == 0, out.stderr
    assert "| seed-lstm | 2/2 |" in out.stdout and "87.48 %" in out.stdout
    runs = json.loads(cli("runs", "--json").stdout)
    assert len(runs) == 2 and len({r["group_id"] for r in runs}) == 1 and runs[0]["group_id"]
    group = RunStore().group(runs[0]["group_id"])
    assert [r.config.seed for r in group] == [3, 4]
    assert [r.name for r in group] == ["seed LSTM (reproduce, seed 3)",
                                       "seed LSTM (reproduce, seed 4)"]
    assert {r.group_label for r in group} == {"seed LSTM (reproduce) × 2 seeds"}
    bad = cli("reproduce", "--seeds", "11")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == (
        "error: invalid configuration: seeds: 11 is out of range (allowed 2 to 10 seeds per "
        "group)")
