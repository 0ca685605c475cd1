"""End to end: the tutorial's plain Keras job vs the lab's CLI job, whole jobs (issue 15).

For each seed preset, in one run with the order alternating per round, fresh processes:

- plain Keras, written here the tutorial's way: the same arrays from core.data, the preset's
  model from core.models.build_model, ``model.fit(x, y, batch_size, epochs)``,
  ``model.evaluate`` on the padded test set, ``model.save``;
- the lab: ``python -m core train --preset P --set ...`` (queue, worker process, live
  metrics, fast mode where it applies, evaluation, saving), its stderr on a terminal as
  for a user, in a fresh LAB_HOME; its phases are the run's ``results["phases"]``. Two
  variants: ``lab`` starts a fresh worker process for the job (no warm worker), ``lab
  (warm)`` finds a warm worker waiting, as on a running lab server (TensorFlow loaded, the
  dataset kept, the seed LSTM's model built and traced: core/warmstart.py).

Both read the same encoded-data cache (LAB_CACHE), so neither pays the first encode.
Reports training time (fit vs the run's train_seconds), whole job (process start to exit)
and their ratios.

    IMDB_DATA=../shared/data/aclImdb_v1_labeled.tar.gz .venv/bin/python bench/end_to_end.py \\
        --presets seed-lstm --train-size 5000 --test-size 5000 --epochs 1 --markdown 1
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import tempfile
import threading
import time

import common

PRESETS = "seed-lstm,seed-lstm-dropout,seed-cnn-lstm"
KERAS_PHASES = ("start", "imports", "data", "model", "training", "evaluation", "saving")


def keras_job(preset: str, train_size: int, test_size: int, epochs: int, out: str) -> None:
    """The plain job (run in its own process); writes its phases as JSON to ``out``."""
    from core.training import process_age

    marks = {"start": process_age()}  # interpreter and this script's modules
    t = [time.monotonic()]

    def mark(name: str) -> None:
        marks[name] = time.monotonic() - t[0]
        t[0] = time.monotonic()

    import keras

    from core.config import preset as make_preset
    from core.data import load_dataset
    from core.models import build_model, compile_model

    mark("imports")
    cfg = make_preset(preset, train_size=train_size, test_size=test_size,
                      **({"epochs": epochs} if epochs else {}))
    ds = load_dataset()
    x, y = ds.arrays("train", cfg.top_words, cfg.maxlen, cfg.train_size)
    xt, yt = ds.arrays("test", cfg.top_words, cfg.maxlen, cfg.test_size)
    mark("data")
    keras.utils.set_random_seed(cfg.seed)
    model = compile_model(build_model(cfg), cfg)
    mark("model")
    model.fit(x, y, batch_size=cfg.batch_size, epochs=cfg.epochs,
              validation_split=cfg.validation_split, verbose=0)
    mark("training")
    _, acc = model.evaluate(xt, yt, batch_size=512, verbose=0)
    mark("evaluation")
    model.save(os.path.join(os.path.dirname(out), "model.keras"))
    mark("saving")
    with open(out, "w") as fh:
        json.dump({"phases": marks, "test_accuracy": float(acc)}, fh)


def _drain(fd: int) -> None:
    """Read a pty until it closes (the CLI's progress bar must not fill it and block)."""
    try:
        while os.read(fd, 4096):
            pass
    except OSError:
        pass


def run_keras(preset: str, args, home: str) -> dict:
    """One plain Keras job in a fresh process; its phases, accuracy and whole time."""
    out = os.path.join(home, "keras.json")
    cmd = [sys.executable, __file__, "--keras-job", preset, "--train-size", str(args.train_size),
           "--test-size", str(args.test_size), "--epochs", str(args.epochs), "--out", out]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=common.ROOT, stdout=subprocess.DEVNULL)
    with open(out) as fh:
        result = json.load(fh)
    return {**result, "whole": time.perf_counter() - t0, "train": result["phases"]["training"]}


def start_warm_worker(home: str) -> None:
    """A warm worker for the lab at ``home``, waiting (loaded and prepared) when this
    returns: before the timed job starts."""
    from pathlib import Path

    from core import jobs, warm

    warm.ensure(Path(home), lambda: jobs.spawn(Path(home), [warm.FLAG], warm.log_path(home)))
    while not warm._entries(Path(home), "ready"):
        time.sleep(0.1)


def run_lab(preset: str, args, home: str, warm_worker: bool = False) -> dict:
    """One ``python -m core train`` job in a fresh LAB_HOME, its stderr on a terminal
    (its progress bar redraws every 0.5 s there; it returns within 0.25 s of the run's end
    on a terminal or a pipe alike); with ``warm_worker``, handed to a waiting warm worker.
    Warm workers left in ``home`` are stopped after the job."""
    from pathlib import Path

    from core import warm
    from core.store import RunStore

    if warm_worker:
        start_warm_worker(home)

    sets = [f"train_size={args.train_size}", f"test_size={args.test_size}"]
    sets += [f"epochs={args.epochs}"] if args.epochs else []
    cmd = [sys.executable, "-m", "core", "train", "--preset", preset]
    cmd += [a for kv in sets for a in ("--set", kv)]
    master, slave = pty.openpty()
    reader = threading.Thread(target=_drain, args=(master,), daemon=True)
    reader.start()
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=common.ROOT, stdout=subprocess.DEVNULL, stderr=slave,
                   env=dict(os.environ, LAB_HOME=home,
                            LAB_WARM_WORKERS="1" if warm_worker else "0"))
    whole = time.perf_counter() - t0
    warm.stop_all(Path(home))  # the one that would wait for the next job
    os.close(slave)
    reader.join(timeout=5)
    os.close(master)
    run = RunStore(home).list_runs(reap=False)[0]
    r = run.results
    return {"whole": whole, "train": r["train_seconds"], "phases": r["phases"],
            "test_accuracy": r["test_accuracy"], "job": run.ended_at - run.created_at,
            "fast": r.get("fast"), "prepared": r.get("prepared_model", False)}


RUNNERS = {"keras": run_keras, "lab": run_lab,
           "lab (warm)": lambda preset, args, home: run_lab(preset, args, home, True)}
LABS = ("lab", "lab (warm)")
LAB_PHASES = ("start", "imports", "data", "encoder", "model", "kernels", "first batch",
              "training", "evaluation", "saving")


def bench(args) -> list[dict]:
    """Every preset, ``rounds`` times, the variants in alternating order."""
    rows = []
    for rnd in range(args.rounds):
        for i, name in enumerate(args.presets.split(",")):
            order = ("keras", *LABS) if (rnd + i) % 2 == 0 else (*LABS[::-1], "keras")
            for variant in order:
                load = os.getloadavg()[0]
                with tempfile.TemporaryDirectory(prefix="e2e-") as home:
                    r = RUNNERS[variant](name, args, home)
                rows.append({"preset": name, "round": rnd + 1, "variant": variant,
                             "load": load, **r})
                print(f"{name} round {rnd + 1} {variant}: training {r['train']:.1f} s, whole "
                      f"{r['whole']:.1f} s, test acc {100 * r['test_accuracy']:.2f} %",
                      flush=True)
    return rows


def ratio_table(rows: list[dict]) -> str:
    """Per preset, round and lab variant: training and whole-job times, plain / lab."""
    out = []
    for k in rows:
        if k["variant"] != "keras":
            continue
        for lab in (r for r in rows if r["variant"] in LABS and r["preset"] == k["preset"]
                    and r["round"] == k["round"]):
            out.append([k["preset"], k["round"], lab["variant"], f"{k['train']:.1f}",
                        f"{lab['train']:.1f}",
                        f"{k['train'] / lab['train']:.2f}x", f"{k['whole']:.1f}",
                        f"{lab['whole']:.1f}", f"{lab['job']:.1f}",
                        f"{k['whole'] / lab['whole']:.2f}x",
                        f"{100 * k['test_accuracy']:.2f} / {100 * lab['test_accuracy']:.2f} %"])
    return common.table(["preset", "round", "lab", "Keras fit s", "lab training s",
                         "training ratio",
                         "Keras whole s", "lab whole s (CLI)", "lab job s (store)",
                         "whole ratio", "test acc Keras / lab"], out)


def phase_table(rows: list[dict]) -> str:
    """Every job's phases in seconds ('-': the plain job has no such phase), with the
    1-minute load average at its start."""
    names = list(dict.fromkeys(LAB_PHASES + KERAS_PHASES))
    out = [[r["preset"], r["round"], r["variant"], f"{r['load']:.1f}"]
           + [f"{r['phases'][n]:.2f}" if n in r["phases"] else "-" for n in names]
           + [f"{sum(r['phases'].values()):.1f}", f"{r['whole']:.1f}"] for r in rows]
    return common.table(["preset", "round", "job", "load", *names, "sum", "whole"], out)


def main() -> None:
    args = common.flags(__doc__, presets=PRESETS, train_size=0, test_size=0, epochs=0,
                        rounds=1, markdown=0, keras_job="", out="")
    if args.keras_job:
        keras_job(args.keras_job, args.train_size, args.test_size, args.epochs, args.out)
        return
    from core import paths
    from core.data import load_dataset

    os.environ.setdefault("LAB_CACHE", str(paths.cache_dir()))  # one cache for all jobs
    load_dataset()  # encoded once here, so neither variant pays the first encode
    rows = bench(args)
    size = (f"train {args.train_size or 'all'} / test {args.test_size or 'all'} reviews, "
            + (f"{args.epochs} epoch(s)" if args.epochs else "the preset's epochs"))
    body = (f"{size}; {args.rounds} round(s), order alternating. Plain Keras: a fresh "
            "process running the tutorial's job (core.data arrays, build_model, fit at the "
            "preset's batch size, evaluate, save). Lab: `python -m core train` (queue, worker, "
            "live metrics, fast mode where it applies), stderr on a terminal, run by a fresh "
            "worker ('lab') or by a warm worker waiting with the seed LSTM's model prepared "
            "('lab (warm)', as on a running lab server). Whole = process "
            "start to exit; 'lab job' = submit to finish in the run store; phases are "
            "results['phases'] (start = process creation to the job's code; imports = Keras "
            "and TensorFlow). Test accuracies are single runs (section 1b compares fast and "
            "plain training over seeds).\n\n"
            + ratio_table(rows) + "\n\n" + phase_table(rows))
    if args.markdown:
        common.write_section("end_to_end", "10. End to end: plain Keras job vs the lab's job",
                             body)
    else:
        print("\n" + body)


if __name__ == "__main__":
    main()
