"""Engine overhead: plain Keras fit vs the engine's plain mode with live streaming.

The engine's fast=false path is ``model.fit`` plus core.training's StoreCallback, which
buffers batch metrics into a RunStore (SQLite, in a temp dir here), checks for a cancel
request after every batch and updates the progress record. Both variants train the same
model, one epoch per round, alternating, so the load on the shared CPU hits both alike;
the time spent inside the callback is also measured directly.

    IMDB_DATA=/work/shared/data/aclImdb_v1_labeled.tar.gz .venv/bin/python bench/engine_overhead.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import common
import numpy as np


def main() -> None:
    args = common.flags(__doc__, train_size=1280, rounds=7)

    import keras

    from core.config import preset
    from core.data import load_dataset
    from core.models import build_model, compile_model
    from core.store import RUNNING, RunStore
    from core.training import Progress, make_store_callback

    ds = load_dataset()
    cfg = preset("seed-lstm", train_size=args.train_size, fast=False)
    x, y = ds.arrays("train", cfg.top_words, cfg.maxlen, cfg.train_size)
    keras.utils.set_random_seed(cfg.seed)
    model = compile_model(build_model(cfg), cfg)
    steps = -(-len(x) // cfg.batch_size)
    tmp = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    store = RunStore(tmp / "lab")
    run_id = store.create_run(cfg, status=RUNNING)

    class Timed(keras.callbacks.Callback):
        """Forwards to the StoreCallback and adds up the time spent in it."""

        def __init__(self, inner):
            super().__init__()
            self.inner, self.seconds = inner, 0.0

        def set_model(self, model):
            super().set_model(model)
            self.inner.set_model(model)

        def _call(self, name, *a):
            t0 = time.perf_counter()
            getattr(self.inner, name)(*a)
            self.seconds += time.perf_counter() - t0

        def on_train_begin(self, logs=None):
            self._call("on_train_begin", logs)

        def on_epoch_begin(self, epoch, logs=None):
            self._call("on_epoch_begin", epoch, logs)

        def on_train_batch_end(self, batch, logs=None):
            self._call("on_train_batch_end", batch, logs)

        def on_epoch_end(self, epoch, logs=None):
            self._call("on_epoch_end", epoch, logs)

        def on_train_end(self, logs=None):
            self._call("on_train_end", logs)

    inside: list[float] = []  # seconds spent in the callback, per epoch

    def epoch(streaming: bool, e: int) -> float:
        callbacks = []
        if streaming:
            cb = make_store_callback(store, run_id, Progress(), steps, args.rounds * 2,
                                     cfg.batch_size, len(x))
            callbacks = [Timed(cb)]
        t0 = time.perf_counter()
        model.fit(x, y, batch_size=cfg.batch_size, epochs=e + 1, initial_epoch=e,
                  shuffle=True, verbose=0, callbacks=callbacks)
        seconds = time.perf_counter() - t0
        inside.append(callbacks[0].seconds if callbacks else 0.0)
        return seconds

    epoch(False, 0)  # warm-up: XLA compile of the train function
    times: dict[bool, list[float]] = {False: [], True: []}
    e = 1
    for r in range(args.rounds):
        for streaming in (False, True) if r % 2 == 0 else (True, False):
            times[streaming].append(epoch(streaming, e))
            print(f"round {r + 1} {'streaming' if streaming else 'plain fit'}: "
                  f"{times[streaming][-1]:.2f} s", flush=True)
            e += 1
    in_cb = [s for s in inside if s > 0]
    plain_med, stream_med = (float(np.median(times[k])) for k in (False, True))
    ratios = [b / a for a, b in zip(times[False], times[True])]
    rows = [["plain model.fit, no callbacks", f"{plain_med:.2f}",
             " ".join(f"{t:.2f}" for t in times[False]), "1.000", "--"],
            ["engine fast=false: fit + StoreCallback", f"{stream_med:.2f}",
             " ".join(f"{t:.2f}" for t in times[True]), f"{np.median(ratios):.3f}",
             f"{np.median(in_cb):.3f} s ({100 * np.median(in_cb) / stream_med:.2f} %)"]]
    header = ["variant", "median s/epoch", "each round s", "ratio (median of rounds)",
              "time inside callback"]
    n_metrics = store.metric_count(run_id)
    body = (f"Seed LSTM, first {len(x)} training reviews ({steps} batches of 64), one epoch "
            f"per round, {args.rounds} rounds alternating; RunStore in a temp dir "
            f"({n_metrics} metric rows written). Per-round ratios streaming/plain: "
            f"{', '.join(f'{r:.3f}' for r in ratios)}.\n\n" + common.table(header, rows)
            + "\n\nThe end-to-end ratio carries the noise of the shared CPU; the time measured "
            "inside the callback is the overhead itself. Target: at most 5 % slower.")
    common.write_section("engine_overhead", "2. Engine overhead: plain fit vs live streaming",
                         body)


if __name__ == "__main__":
    main()
