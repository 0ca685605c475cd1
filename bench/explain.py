"""Integrated gradients and 'inside the LSTM' timings (and the running sentiment against
the model's predictions of every prefix of the review) for a 200-word review with the seed
LSTM (maxlen 500): python -m bench.explain [--reps 5]. Weights do not change the cost, so
the model is built fresh; the first call (tracing) is reported apart. With --run RUN_ID
(LAB_HOME, IMDB_DATA set): that trained run's model, on a real ~200-word test review."""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--preset", default="seed-lstm")
    ap.add_argument("--run", default="")
    args = ap.parse_args()
    from core.config import preset
    from core.explain import IntegratedGradients, inside_lstm
    from core.models import build_model

    cfg = preset(args.preset)
    model = build_model(cfg)
    rng = np.random.default_rng(0)
    row = np.zeros(cfg.maxlen, dtype=np.int32)
    row[-201:] = np.r_[1, rng.integers(3, cfg.top_words, 200)]
    if args.run:
        from core import store
        from core.data import load_dataset
        from core.predict import Predictor

        pred = Predictor.load(store.RunStore(), args.run)
        cfg, model = pred.run.config, pred.model
        text = next(t for t in load_dataset().texts("test")
                    if 195 <= len(pred.encoder.encode(t).tokens) <= 205)
        row = pred.encoder.encode(text).padded
        print(f"run {args.run}: a {len(pred.encoder.encode(text).tokens)}-word test review")
    t0 = time.perf_counter()
    ig = IntegratedGradients(model)
    first = ig(row)
    print(f"IG first call (trace + run): {time.perf_counter() - t0:.2f} s")
    times = [ig(row).seconds for _ in range(args.reps)]
    print(f"IG {ig.steps} steps, 200 words, maxlen {cfg.maxlen}: median "
          f"{statistics.median(times) * 1000:.0f} ms (min {min(times) * 1000:.0f}); "
          f"completeness gap {first.gap:.2%}")
    times = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        inside_lstm(model, cfg.architecture, row)
        times.append(time.perf_counter() - t0)
    print(f"inside the LSTM: median {statistics.median(times) * 1000:.0f} ms "
          f"(min {min(times) * 1000:.0f})")
    # The running sentiment against the model's predictions of each prefix of the review
    # (whose padding prefixes are longer: equal once the padding state has converged).
    from core.text import pad_pre

    n = int((row != 0).sum())
    codes = row[-n:].tolist()
    running = inside_lstm(model, cfg.architecture, row)["running"][-n:]
    prefixes = pad_pre([codes[:t + 1] for t in range(len(codes))], cfg.maxlen)
    want = np.asarray(model.predict(prefixes, verbose=0)).ravel()
    print(f"running sentiment vs predictions of the prefixes: max difference "
          f"{np.abs(running - want).max():.1e}")


if __name__ == "__main__":
    main()
