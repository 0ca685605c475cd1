"""Time estimates vs actual: core.guard's estimate for a job against the job itself.

Submits each seed preset (default: the first 2,000 training and 2,000 test reviews, 1
epoch; ``--full``: the presets as they are, full data) through core.jobs as the Train page
does, one at a time, fresh worker per job (LAB_WARM_WORKERS=0: the estimate's start-up
cost is a fresh worker's), and compares guard.estimate (at the speed the run trains: fast
mode where core.fast.applies, else plain Keras) with what the run store recorded: the
training time per epoch and the whole job (worker start to final status). Goal: within
+-30 %. ``--calibrate`` adds the calibration jobs (tiny models, batch 2 and 32, and the
seed LSTM and CNN + LSTM in plain mode) and prints each job's raw figures.

    .venv/bin/python bench/estimates.py [--train-size 2000] [--test-size 2000] [--epochs 1]
                                        [--full] [--calibrate]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import common

PRESETS = ("seed-lstm", "seed-lstm-dropout", "seed-cnn-lstm")
TINY = {"architecture": "lstm", "top_words": 100, "maxlen": 40, "embedding_dim": 8,
        "units": 4, "validation_split": 0.0, "name": "tiny"}
GOAL = 0.30


def jobs_to_run(args) -> list[tuple[str, object]]:
    from core.config import load_config, preset

    subset = {} if args.full else {"train_size": args.train_size, "test_size": args.test_size,
                                   "epochs": args.epochs}
    out = [(name, preset(name, **subset)) for name in PRESETS]
    if args.calibrate:
        out += [(f"{name} fast=false", preset(name, fast=False, **subset))
                for name in ("seed-lstm", "seed-cnn-lstm")]
        for fast in (True, False):
            for batch in (2, 32):
                out.append((f"tiny batch {batch}" + ("" if fast else " fast=false"),
                            load_config({**TINY, **subset, "batch_size": batch, "fast": fast,
                                         "epochs": 1})))
    return out


def run_one(store, cfg, n_train: int, n_test: int) -> dict:
    from core import jobs
    from core.guard import estimate

    est = estimate(cfg, n_train, n_test)
    time.sleep(1.0)  # let the previous job's exit settle
    run_id = jobs.submit(store, cfg, n_train=n_train, n_test=n_test)
    while (run := store.get(run_id)).active:
        time.sleep(0.1)
    assert run.status == "completed", run.error
    res = run.results
    epochs = res.get("epoch_seconds") or []
    return {"est": est, "run": run, "epochs_s": epochs, "train_s": res.get("train_seconds"),
            "n_fit": res.get("n_train"), "n_test": res.get("n_test"), "job_s": run.ended_at - run.started_at,
            "phases": res.get("phases", {}), "fast": res.get("fast")}


JOB_PHASES = ("start", "imports", "data", "encoder", "model", "kernels", "saving")


def fit(done: list[tuple[str, object, dict]]) -> dict[str, float]:
    """guard's constants fitted to the calibration jobs' phases (no validation split):
    the cost per batch-step (plain) or per batch (fast) and per epoch from the tiny
    models at batch 2 vs 32, the FLOP rates from the seed models (training less those
    costs), tracing = the "first batch" phase, the job's fixed cost = its other phases,
    the prediction rates from the "evaluation" phase less TEST_OVERHEAD_S."""
    import statistics

    from core import guard

    def by(label):
        return next(g for name, _, g in done if name == label)

    def train(g):  # fit less the tracing before its first batch
        return g["phases"]["training"]

    out: dict[str, float] = {}
    for mode, suffix in (("plain", " fast=false"), ("fast", "")):
        small, large = by("tiny batch 2" + suffix), by("tiny batch 32" + suffix)
        cfg_s, cfg_l = (next(c for n, c, _ in done if n == f"tiny batch {b}{suffix}")
                        for b in (2, 32))
        if mode == "plain":
            units = [-(-small["n_fit"] // c.batch_size) * guard.loop_steps(c)
                     for c in (cfg_s, cfg_l)]
            step = (train(small) - train(large)) / (units[0] - units[1])
            out["STEP_OVERHEAD_S"] = step
            out["EPOCH_OVERHEAD_S"] = train(large) - units[1] * step
        else:
            units = [-(-small["n_fit"] // c.batch_size) for c in (cfg_s, cfg_l)]
            per_batch = (train(small) - train(large)) / (units[0] - units[1])
            out["FAST_BATCH_OVERHEAD_S"] = per_batch
            out["FAST_EPOCH_OVERHEAD_S"] = max(0.0, train(large) - units[1] * per_batch)
        seeds = [(c, g) for n, c, g in done if n.startswith("seed") and g["fast"] == (mode == "fast")]
        flops = sum(g["est"].flops_per_epoch for _, g in seeds)
        rest = 0.0
        for c, g in seeds:
            batches = -(-g["n_fit"] // c.batch_size)
            if mode == "plain":
                rest += train(g) - batches * guard.loop_steps(c) * out["STEP_OVERHEAD_S"] \
                    - out["EPOCH_OVERHEAD_S"]
            else:
                rest += train(g) - batches * out["FAST_BATCH_OVERHEAD_S"] \
                    - out["FAST_EPOCH_OVERHEAD_S"]
        out[f"{mode.upper()}_FLOPS_PER_S"] = flops / max(rest, 1e-9)
        out[f"{mode.upper()}_TRACE_S"] = statistics.median(
            g["phases"].get("first batch", 0.0) for n, _, g in done if g["fast"] == (mode == "fast"))
        pred_flops = sum(g["est"].flops_per_epoch / guard.TRAIN_FACTOR / g["n_fit"] * g["n_test"]
                         for _, g in seeds)
        pred_s = sum(g["phases"]["evaluation"] - guard.TEST_OVERHEAD_S for _, g in seeds)
        out[f"{mode.upper()}_PREDICT_FLOPS_PER_S"] = pred_flops / max(pred_s, 1e-9)
    out["JOB_OVERHEAD_S"] = statistics.median(
        sum(g["phases"].get(k, 0.0) for k in JOB_PHASES) for _, _, g in done)
    return out


def pct(est: float, actual: float) -> str:
    return f"{100 * (est - actual) / actual:+.0f} %"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-size", type=int, default=2000)
    ap.add_argument("--test-size", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--full", action="store_true", help="the presets as they are, full data")
    ap.add_argument("--calibrate", action="store_true", help="add the calibration jobs")
    ap.add_argument("--markdown", type=int, default=1, help="write BENCHMARKS.md's section")
    args = ap.parse_args()
    common.use_real_data()
    os.environ["LAB_WARM_WORKERS"] = "0"
    os.environ.setdefault("LAB_HOME", tempfile.mkdtemp(prefix="estimates-bench-"))
    os.environ["LAB_MAX_TRAIN_MINUTES"] = str(10 * 24 * 60)
    from core.data import load_dataset
    from core.store import RunStore

    ds = load_dataset()
    n_train, n_test = len(ds.train), len(ds.test)
    store = RunStore()
    rows, notes, within, done = [], [], 0, []
    measured = jobs_to_run(args)
    for label, cfg in measured:
        got = run_one(store, cfg, n_train, n_test)
        done.append((label, cfg, got))
        est = got["est"]
        ok_train = abs(est.training_seconds - got["train_s"]) <= GOAL * got["train_s"]
        ok_job = abs(est.seconds - got["job_s"]) <= GOAL * got["job_s"]
        within += ok_train and ok_job and label in PRESETS
        rows.append([label, est.speed, f"{est.training_seconds:.1f}", f"{got['train_s']:.1f}",
                     pct(est.training_seconds, got["train_s"]), f"{est.seconds:.0f}",
                     f"{got['job_s']:.0f}", pct(est.seconds, got["job_s"]),
                     "yes" if ok_train and ok_job else "no"])
        phases = ", ".join(f"{k} {v:.1f}" for k, v in got["phases"].items())
        notes.append(f"- {label}: {got['run'].results.get('n_train')} training reviews, "
                     f"batch {cfg.batch_size}, maxlen {cfg.maxlen}; {est.steps_per_review:.0f} "
                     f"recurrent steps per review estimated; phases (s): {phases}")
        print(rows[-1], flush=True)
    size = ("the presets as they are (full data)" if args.full else
            f"the first {args.train_size:,} training and {args.test_size:,} test reviews, "
            f"{args.epochs} epoch(s)")
    body = (
        f"core.guard.estimate vs the job, for {size}: each job submitted through core.jobs "
        "(fresh worker per job, one at a time), estimated at the speed it trains (fast mode "
        "where core.fast.applies, else plain Keras). 'training' is the whole fit as the run "
        "store recorded it (tracing before the first batch, then every epoch); 'job' is "
        "worker start to final status (TensorFlow import, data, model, training, test "
        "evaluation, saving). "
        f"Goal: within +-{GOAL:.0%}.\n\n"
        + common.table(["job", "speed estimated", "est training s", "actual training s", "error",
                        "est job s", "actual job s", "error", "within 30 %"], rows)
        + f"\n\nSeed presets within +-30 % on both (training and job): {within} of {len(PRESETS)}.\n\n"
        + "\n".join(notes))
    if args.calibrate:
        fitted = fit(done)
        print("\nFitted constants for core/guard.py:")
        for name, value in fitted.items():
            print(f"{name} = {value:.3g}")
        body += "\n\nConstants fitted to these jobs (bench/estimates.py --calibrate): " + ", ".join(
            f"{k} {v:.3g}" for k, v in fitted.items())
    if args.markdown:
        common.write_section("estimates", "12. Time estimates: estimated vs actual", body)
    else:
        print(body)


if __name__ == "__main__":
    main()
