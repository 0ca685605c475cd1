"""Integrated gradients and 'inside the LSTM' timings for a 200-word review with the seed
LSTM (maxlen 500): python bench/explain.py [--reps 5]. Weights do not change the cost, so
the model is built fresh; the first call (tracing) is reported apart."""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--preset", default="seed-lstm")
    args = ap.parse_args()
    from core.config import preset
    from core.explain import IntegratedGradients, inside_lstm
    from core.models import build_model

    cfg = preset(args.preset)
    model = build_model(cfg)
    rng = np.random.default_rng(0)
    row = np.zeros(cfg.maxlen, dtype=np.int32)
    row[-201:] = np.r_[1, rng.integers(3, cfg.top_words, 200)]
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


if __name__ == "__main__":
    main()
