"""Lean server: a job's start-up with and without a warm worker, and the inference process.

Part 1 submits the same 1,000-review seed-LSTM job (1 epoch, 1,000 test reviews) through
core.jobs, as the Train page does, alternately to a fresh worker (LAB_WARM_WORKERS=0, the
lab before warm workers) and to a warm one (waiting: TensorFlow imported, the dataset view
kept, the seed LSTM's model built and traced; core/warmstart.py), and reads from the run
store: submit -> first batch metric, submit -> completed, and where the time before the
first batch went (the run's phases), with the 1-minute load average at each submit. With
``--full 1`` it also submits the seed LSTM preset as the Train page does (all 25,000
reviews, two probe sentences) to each, cancelled after its first batch.

Part 2 asks the inference process (core.inference, what the Predict page calls) for typed
reviews and attributions with the finished seed-LSTM model, timed from the page's call, and
compares its probabilities with Keras's ``model.predict`` on the same padded rows.

    .venv/bin/python bench/lean_server.py [--rounds 3] [--reviews 200] [--full 1]
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import common
import numpy as np

TRAIN_SIZE, TEST_SIZE = 1000, 1000
PROBES = ("a wonderful film", "a boring waste of time")  # the full job's probe sentences


def first_batch_s(store, run_id: str) -> float | None:
    rows = store.metrics(run_id, phase="batch")
    return rows[0]["t"] - store.get(run_id, reap=False).created_at if rows else None


def one_job(store, warm_on: bool, full: bool = False) -> dict:
    """Submit one job (cold or to a waiting warm worker) and wait for its end; ``full``:
    the whole preset with probes, cancelled once its first batch is in."""
    from core import jobs, warm
    from core.config import preset
    from core.store import CANCELLED, COMPLETED

    os.environ["LAB_WARM_WORKERS"] = "1" if warm_on else "0"
    if warm_on:
        jobs.dispatch(store)  # make sure one waits, loaded
        while not warm._entries(store.home, "ready"):
            time.sleep(0.1)
    while warm._entries(store.home, "starting"):  # none loads beside a fresh worker's job
        time.sleep(0.1)
    time.sleep(2.0)  # let the machine settle after the previous job's exit
    load = os.getloadavg()[0]
    if full:
        run_id = jobs.submit(store, preset("seed-lstm"), PROBES)
    else:
        run_id = jobs.submit(store, preset("seed-lstm", train_size=TRAIN_SIZE,
                                           test_size=TEST_SIZE, epochs=1))
    while (run := store.get(run_id)).active:
        if full and store.metric_count(run_id, "batch"):
            jobs.cancel(store, run_id)
        time.sleep(0.05)
    assert run.status == (CANCELLED if full else COMPLETED), run.error
    return {"run": run_id, "first": first_batch_s(store, run_id), "load": load,
            "done": None if full else run.ended_at - run.created_at,
            "train": run.results.get("train_seconds"),
            "phases": run.results.get("phases", {}),
            "prepared": run.results.get("prepared_model", False)}


FULL = ", full preset + probes"  # the name suffix of the full jobs


def _order(name: str) -> tuple[bool, bool]:
    """Table order: fresh, warm, then the full jobs likewise."""
    return FULL in name, "warm" in name


def startup_rows(store, rounds: int, full: bool) -> tuple[list[list], dict[str, list[dict]]]:
    kinds = [(False, False), (True, False)] + ([(False, True), (True, True)] if full else [])
    got: dict[str, list[dict]] = {}
    for i in range(rounds):
        for warm_on, whole in (kinds if i % 2 == 0 else kinds[::-1]):
            name = ("warm worker" if warm_on else "fresh worker") + (FULL if whole else "")
            got.setdefault(name, []).append(one_job(store, warm_on, whole))
    rows = []
    for name in sorted(got, key=_order):
        runs = got[name]
        first = [r["first"] for r in runs]
        done = [r["done"] for r in runs if r["done"] is not None]
        rows.append([name, " / ".join(f"{x:.2f}" for x in first), f"{np.median(first):.2f}",
                     " / ".join(f"{x:.1f}" for x in done) or "(cancelled)",
                     f"{np.median(done):.1f}" if done else "-",
                     " / ".join(f"{r['load']:.1f}" for r in runs)])
    return rows, got


# Phases before the first batch (core.training.Phases), then the rest of the job.
START_PHASES = ("start", "imports", "data", "encoder", "model", "kernels", "first batch")


def phase_rows(got: dict[str, list[dict]]) -> list[list]:
    """Each job's seconds per phase up to its first batch, and whether it trained a model
    its warm worker had prepared."""
    return [[name, i + 1, "yes" if r["prepared"] else "no", f"{r['load']:.1f}"]
            + [f"{r['phases'].get(p, 0.0):.2f}" for p in START_PHASES]
            + [f"{sum(r['phases'].get(p, 0.0) for p in START_PHASES):.2f}", f"{r['first']:.2f}"]
            for name in sorted(got, key=_order) for i, r in enumerate(got[name])]


def inference_rows(store, run_id: str, n: int) -> tuple[list[list], str]:
    from core.data import load_dataset
    from core.inference import InferenceClient
    from core.predict import load_run_model
    from core.text import Encoder

    texts = [t for t in load_dataset().texts("test") if 170 <= len(t.split()) <= 230][:n]
    client = InferenceClient(store.home)
    client.predict(run_id, texts[:1])  # starts the process and loads the model
    lat, att, probs = [], [], []
    for text in texts:
        t, out = common.timed(lambda text=text: client.predict(run_id, [text]))
        lat.append(t)
        probs.append(out[0]["probability"])
    for text in texts[:20]:
        att.append(common.timed(lambda text=text: client.attribution(run_id, text))[0])
    encoder = Encoder.load(store.encoder_path(run_id))
    keras_p = load_run_model(store, run_id).predict(encoder.encode_batch(texts), verbose=0)
    diff = float(np.max(np.abs(np.asarray(probs) - keras_p.ravel())))
    ms = lambda xs, q: f"{1000 * np.percentile(xs, q):.2f}"  # noqa: E731
    rows = [["typed review (predict, 1 text)", len(lat), ms(lat, 50), ms(lat, 99)],
            ["attribution (occlusion, all words)", len(att), ms(att, 50), ms(att, 99)]]
    return rows, (f"max |P(inference process) - P(Keras model.predict)| over {len(texts)} "
                  f"reviews of 170-230 words: {diff:.1e}")


def main() -> None:
    args = common.flags(__doc__, rounds=3, reviews=200, full=1)
    from core import inference, warm
    from core.data import load_dataset
    from core.store import RunStore

    home = Path(tempfile.mkdtemp(prefix="lean-bench-"))  # workers get it as their LAB_HOME
    os.environ.setdefault("LAB_CACHE", str(common.ROOT / "bench" / "out" / "cache"))
    load_dataset()  # the encoded-data cache is built once, before anything is timed
    store = RunStore(home)
    try:
        start, got = startup_rows(store, args.rounds, bool(args.full))
        infer, note = inference_rows(store, got["warm worker"][-1]["run"], args.reviews)
    finally:
        warm.stop_all(home)
        inference.stop(home)
    body = (f"Part 1: the seed LSTM on {TRAIN_SIZE:,} reviews, 1 epoch, {TEST_SIZE:,} test "
            f"reviews, submitted through core.jobs; {args.rounds} rounds, fresh and warm "
            "alternating"
            + ("; and the seed LSTM preset as the Train page submits it (all 25,000 reviews, "
               f"{len(PROBES)} probe sentences), cancelled after its first batch" if args.full
               else "")
            + ". Seconds, each round / median.\n\n"
            + common.table(["worker", "submit -> first batch", "median",
                            "submit -> completed", "median", "load at submit"], start)
            + "\n\nWhere each job's time before its first batch went (results['phases'], "
            "seconds; start = claim to the job's code, first batch = the first training "
            "batch, including any tracing):\n\n"
            + common.table(["worker", "round", "prepared model", "load", *START_PHASES,
                            "sum", "submit -> first batch"], phase_rows(got))
            + "\n\nPart 2: the inference process, timed from the page's call (one round trip "
            "over a local socket).\n\n"
            + common.table(["request", "n", "p50 ms", "p99 ms"], infer) + f"\n\n- {note}")
    common.write_section("lean_server", "7. Lean server: warm workers and the inference "
                         "process", body)


if __name__ == "__main__":
    main()
