"""Training speed: plain Keras fit on 500-padded arrays vs fast exact mode (issue 4).

Both variants start from the same initial weights and train on the same subset in one
process, epoch by epoch in alternating order (so drifting load on the shared CPU hits
both alike); test accuracy is model.predict of each trained model. Also reports the
training FLOPs per epoch and the fraction of this CPU's fp32 peak each variant reaches.

    IMDB_DATA=/work/shared/data/aclImdb_v1_labeled.tar.gz .venv/bin/python bench/train_speed.py
"""

from __future__ import annotations

import dataclasses
import functools
import time

import common
import numpy as np

# Training costs ~3x the forward pass (forward, gradient w.r.t. inputs, w.r.t. weights).
TRAIN_FACTOR = 3


def step_flops(cfg) -> tuple[float, float]:
    """Forward FLOPs of one recurrent step for one review, and of one conv position."""
    gates = 4 * cfg.units
    feat = cfg.conv_filters if cfg.architecture.startswith("cnn") else cfg.embedding_dim
    recur = 2 * (feat + cfg.units) * gates
    conv = 2 * cfg.kernel_size * cfg.embedding_dim * cfg.conv_filters \
        if cfg.architecture.startswith("cnn") else 0.0
    return recur, conv


def epoch_flops(cfg, plan, x: np.ndarray) -> tuple[float, float]:
    """Training FLOPs of one epoch: (plain padded model, fast mode as batched here)."""
    from core import fast, native

    recur, conv = step_flops(cfg)
    n = len(x)
    pool = plan.pool_size
    plain = TRAIN_FACTOR * n * (plan.steps * recur + plan.maxlen * conv)
    key = plan.bucket_steps(x)
    quick = 0.0
    for rows in fast._batches(key, cfg.batch_size, np.random.default_rng(0)):
        s = max(int(key[rows].max()), 1)
        window = s if native.enabled() else plan.window_for(s)  # native: exactly its steps
        quick += cfg.batch_size * (s * recur + window * pool * conv)  # the batch's own steps
        quick += (plan.steps - s) * recur + plan.maxlen * conv  # the shared prefix, batch 1
    return plain, TRAIN_FACTOR * quick


def bench_preset(name: str, args, ds, peak: float, full_train) -> tuple[list[list[str]], str]:
    """Train one preset both ways, epoch by epoch; returns (table rows, note).
    ``full_train(top_words, maxlen)``: the whole padded training set (for the FLOP count)."""
    import keras

    from core import fast
    from core.config import preset
    from core.models import build_model, compile_model

    cfg = preset(name, train_size=args.train_size, test_size=args.test_size,
                 epochs=args.epochs)
    x, y = ds.arrays("train", cfg.top_words, cfg.maxlen, cfg.train_size)
    xt, yt = ds.arrays("test", cfg.top_words, cfg.maxlen, cfg.test_size)
    keras.utils.set_random_seed(cfg.seed)
    plain = compile_model(build_model(cfg), cfg)
    quick = compile_model(build_model(cfg), cfg)
    quick.set_weights(plain.get_weights())
    plan = fast.make_plan(quick, cfg.maxlen)

    times: dict[str, list[float]] = {"plain": [], "fast": []}
    cpu: dict[str, list[float]] = {"plain": [], "fast": []}
    calls: dict[str, list[float]] = {"plain": [], "fast": []}

    class EpochTimer(keras.callbacks.Callback):
        """Epoch time as Keras reports it: on_epoch_begin to on_epoch_end."""

        def __init__(self, variant: str):
            super().__init__()
            self.variant = variant

        def on_epoch_begin(self, epoch, logs=None):
            self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            times[self.variant].append(time.perf_counter() - self.t0)
            cpu[self.variant].append(time.process_time() - self.c0)

    def run_epoch(variant: str, epoch: int) -> None:
        if variant == "plain":
            plain.fit(x, y, batch_size=cfg.batch_size, epochs=epoch + 1, initial_epoch=epoch,
                      shuffle=True, verbose=0, callbacks=[EpochTimer("plain")])
        else:
            one = dataclasses.replace(cfg, epochs=epoch + 1)  # just this epoch, as plain
            fast.fit(quick, one, x, y, None, None, [EpochTimer("fast")],
                     initial_epoch=epoch)

    for epoch in range(cfg.epochs):
        for variant in ("plain", "fast") if epoch % 2 == 0 else ("fast", "plain"):
            seconds, _ = common.timed(functools.partial(run_epoch, variant, epoch))
            calls[variant].append(seconds)
            print(f"{name} epoch {epoch + 1} {variant}: {times[variant][-1]:.1f} s "
                  f"({cpu[variant][-1]:.1f} CPU s; the fit call took {seconds:.1f} s)",
                  flush=True)
    flops = dict(zip(("plain", "fast"), epoch_flops(cfg, plan, x)))
    later = slice(1, None) if cfg.epochs > 1 else slice(None)
    steady = {v: float(np.median(t[later])) for v, t in times.items()}
    best = {v: float(np.min(t[later])) for v, t in times.items()}
    steady_cpu = {v: float(np.median(t[later])) for v, t in cpu.items()}
    pairs = [p / f for p, f in zip(times["plain"][later], times["fast"][later])]
    rows = []
    for variant, model in (("plain", plain), ("fast", quick)):
        acc = common.test_accuracy(model, xt, yt, cfg.maxlen)
        gflops = flops[variant] / best[variant] / 1e9
        rows.append([name, variant, f"{times[variant][0]:.1f}",
                     " ".join(f"{t:.1f}" for t in times[variant][later]),
                     f"{steady['plain'] / steady[variant]:.2f}x",
                     f"{best['plain'] / best[variant]:.2f}x", f"{steady_cpu[variant]:.1f}",
                     f"{100 * acc:.2f} %", f"{flops[variant] / 1e12:.2f}", f"{gflops:.1f}",
                     f"{100 * gflops / peak:.1f} %"])
    need = plan.steps_needed(x)
    x_all = full_train(cfg.top_words, cfg.maxlen)
    full = dict(zip(("plain", "fast"), epoch_flops(cfg, plan, x_all)))
    # fit()'s own setup and teardown per call: the whole call less the epoch inside it.
    outside = {v: [c - t for c, t in zip(calls[v], times[v])] for v in calls}
    note = (f"{name}: per-epoch wall-time ratios plain/fast (epochs 2+): "
            f"{', '.join(f'{r:.2f}' for r in pairs)}; whole fit() calls (setup and teardown "
            f"included) took plain {' '.join(f'{t:.1f}' for t in calls['plain'])} s, fast "
            f"{' '.join(f'{t:.1f}' for t in calls['fast'])} s, of which outside the epoch "
            f"(setup and teardown) plain {min(outside['plain']):.1f}-"
            f"{max(outside['plain']):.1f} s, fast {min(outside['fast']):.1f}-"
            f"{max(outside['fast']):.1f} s; {len(x)} training reviews; "
            f"on average "
            f"{need.mean():.0f} of "
            f"{plan.steps} recurrent steps per review read review tokens "
            f"({100 * need.mean() / plan.steps:.0f} %). Physical limit for a full epoch "
            f"({len(x_all):,} reviews): plain {full['plain'] / 1e12:.2f} TFLOP = "
            f"{full['plain'] / peak / 1e9:.1f} s at the {peak:.0f} GFLOP/s peak; fast "
            f"{full['fast'] / 1e12:.2f} TFLOP = {full['fast'] / peak / 1e9:.1f} s; at the "
            f"best rates measured here a full epoch would take ~"
            f"{full['plain'] / flops['plain'] * best['plain']:.0f} s plain and ~"
            f"{full['fast'] / flops['fast'] * best['fast']:.0f} s fast")
    return rows, note


def main() -> None:
    args = common.flags(__doc__, train_size=5000, test_size=5000, epochs=4,
                         presets="seed-lstm,seed-cnn-lstm")
    from core.data import load_dataset

    ds = load_dataset()
    peak = common.machine()["peak_gflops"]
    # The presets share top_words and maxlen: pad the whole training set once.
    full_train = functools.cache(lambda top, maxlen: ds.arrays("train", top, maxlen)[0])
    rows, notes = [], []
    for name in args.presets.split(","):
        more, note = bench_preset(name, args, ds, peak, full_train)
        rows += more
        notes.append(note)
    header = ["preset", "variant", "epoch 1 s (compile)", "later epochs s",
              "speed-up (median)", "speed-up (best)", "CPU s/epoch", "test acc", "TFLOP/epoch",
              "GFLOP/s (best)", "of fp32 peak"]
    body = (f"Train subset: first {args.train_size} training reviews, test: first "
            f"{args.test_size} test reviews, {args.epochs} epochs, batch 64, maxlen 500, "
            "same initial weights for both variants; epochs alternate plain/fast in one "
            "process. Epoch times run from on_epoch_begin to on_epoch_end, as Keras reports "
            "them (each variant is called once per epoch here, and fit()'s own setup and "
            "teardown per call would otherwise count against it; the whole calls, and the "
            "seconds each spent outside its epoch, are in the notes). 'later epochs' lists epochs 2+ (epoch 1 "
            "includes tracing and compilation for both). Fast mode's LSTM loops: "
            f"{common.kernels()}. Speed-up = plain / fast wall time per later epoch: ratio of the medians, "
            "and of the best (fastest) epochs, the least disturbed by other jobs on the "
            "shared CPU; CPU s = process CPU time, all threads (it also counts threads "
            "spinning while the other core is taken). FLOPs: "
            f"{TRAIN_FACTOR}x the forward matmul/conv FLOPs; plain counts all padded steps, "
            "fast counts the steps it runs (bucket-rounded) plus the batch-1 prefix.\n\n"
            + common.table(header, rows) + "\n\n" + "\n".join(f"- {n}" for n in notes))
    common.write_section("train_speed", "1. Training speed: plain fit vs fast exact mode", body)


if __name__ == "__main__":
    main()
