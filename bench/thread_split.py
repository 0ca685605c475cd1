"""Threads within an op: one, or the job's two, for fast mode's native kernels and plain fit.

core.worker.set_threads gives TensorFlow one intra-op thread where fast mode trains on the
native kernels (each batch's two halves already run side by side on the two inter-op
threads) and the job's threads elsewhere. This measures that choice: each workload trains
in a fresh process per setting, the settings alternating per round, and reports the last
epoch's wall and process CPU time (all threads) and the ratios, one thread / two.

- fast mode, native kernels: the seed LSTM and the CNN + LSTM presets, on the first
  ``--train-size`` training reviews;
- plain Keras fit: the ``bigram-fasttext`` preset (its n-gram rows, as a run trains them)
  and the seed LSTM with dropout, on the first ``--plain-size`` reviews.

    IMDB_DATA=../shared/data/aclImdb_v1_labeled.tar.gz .venv/bin/python bench/thread_split.py
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time

import common
import numpy as np

WORKLOADS = {  # name: (preset, fast mode)
    "seed-lstm": ("seed-lstm", True),
    "seed-cnn-lstm": ("seed-cnn-lstm", True),
    "bigram-fasttext": ("bigram-fasttext", False),
    "seed-lstm-dropout": ("seed-lstm-dropout", False),
}


def child(name: str, intra: int, n: int, epochs: int) -> None:
    """One workload's epochs with ``intra`` intra-op threads; prints the last one as JSON."""
    import tensorflow as tf

    from core import fast
    from core.config import preset
    from core.data import load_dataset
    from core.models import build_model, compile_model

    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    import keras

    name_, use_fast = WORKLOADS[name]
    cfg = preset(name_, train_size=n, epochs=epochs)
    ds = load_dataset()
    keras.utils.set_random_seed(cfg.seed)
    model = compile_model(build_model(cfg), cfg)
    _, x, y = common.train_rows(ds, cfg)
    for epoch in range(epochs):
        w0, c0 = time.perf_counter(), time.process_time()
        if use_fast:
            fast.fit(model, dataclasses.replace(cfg, epochs=epoch + 1), x, y, None, None, [],
                     initial_epoch=epoch)
        else:
            model.fit(x, y, batch_size=cfg.batch_size, epochs=1, shuffle=True, verbose=0)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    print(json.dumps({"wall": wall, "cpu": cpu}), flush=True)


def measure(name: str, intra: int, n: int, epochs: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", name, str(intra), str(n),
                          str(epochs)], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(common.ROOT)})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    args = common.flags(__doc__, train_size=12000, plain_size=4000, epochs=2, rounds=2)
    rows = []
    for name, (_, use_fast) in WORKLOADS.items():
        n = args.train_size if use_fast else args.plain_size
        got: dict[int, list[dict]] = {1: [], 2: []}
        for r in range(args.rounds):
            for intra in ((1, 2) if r % 2 == 0 else (2, 1)):
                got[intra].append(measure(name, intra, n, args.epochs))
                print(name, intra, got[intra][-1], flush=True)
        med = {k: {m: float(np.median([g[m] for g in v])) for m in ("wall", "cpu")}
               for k, v in got.items()}
        rows.append([name, "fast, native kernels" if use_fast else "plain fit", n,
                     " / ".join(f"{g['cpu']:.2f}" for g in got[2]),
                     " / ".join(f"{g['cpu']:.2f}" for g in got[1]),
                     f"{med[1]['cpu'] / med[2]['cpu']:.2f}",
                     " / ".join(f"{g['wall']:.2f}" for g in got[2]),
                     " / ".join(f"{g['wall']:.2f}" for g in got[1]),
                     f"{med[1]['wall'] / med[2]['wall']:.2f}"])
    header = ["workload", "trains with", "reviews", "CPU s, 2 intra-op threads",
              "CPU s, 1", "CPU ratio 1/2", "wall s, 2", "wall s, 1", "wall ratio 1/2"]
    body = (f"Epoch {args.epochs} of each workload in a fresh process per setting (2 inter-op "
            f"threads in both), settings alternating over {args.rounds} rounds; medians in "
            "the ratios. CPU s: the process's CPU time over the epoch, all threads. "
            "core.worker.set_threads gives one intra-op thread to runs that train on the "
            "native kernels and the job's threads to the others.\n\n"
            + common.table(header, rows))
    common.write_section("thread_split", "1d. Threads within an op: fast mode vs plain fit",
                         body)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    else:
        main()
