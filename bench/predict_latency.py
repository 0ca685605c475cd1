"""Prediction latency: one typed review, tokenize -> probability, plain vs fast path.

The engine's Predictor (core/predict.py) scores a typed review by checking and encoding
the text and then either ``model.predict`` on the padded row (plain) or FastPredictor's
numpy pass over the review's own tokens from a precomputed padding state (fast). Both are
timed end to end (Predictor.predict_one) on the same 200 real test reviews of ~230 words,
interleaved, and their probabilities are compared.

    IMDB_DATA=/work/shared/data/aclImdb_v1_labeled.tar.gz .venv/bin/python bench/predict_latency.py
"""

from __future__ import annotations

import time

import common
import numpy as np

# Typed reviews of about this many words.
TARGET_WORDS = 230
WORD_SPREAD = 30  # ... give or take this many


def reviews_near(ds, words: int, spread: int, n: int) -> list[str]:
    """n real test reviews whose length in words is within spread of ``words``."""
    from core.text import tokenize

    picked = [t for t in ds.texts("test") if abs(len(tokenize(t)) - words) <= spread]
    return picked[:n]


def main() -> None:
    args = common.flags(__doc__, reviews=200, presets="seed-lstm,seed-cnn-lstm")
    import bench_models

    from core.data import load_dataset

    ds = load_dataset()
    texts = reviews_near(ds, TARGET_WORDS, WORD_SPREAD, args.reviews)
    rows, notes = [], []
    for name in args.presets.split(","):
        trained = bench_models.trained_predictors(name, ds)
        plain, quick = trained.plain, trained.fast
        for p in (plain, quick):  # warm-up (XLA compile of predict, first numpy calls)
            p.predict_one(texts[0])
        lat: dict[str, list[float]] = {"plain": [], "fast": []}
        probs: dict[str, list[float]] = {"plain": [], "fast": []}
        for i, text in enumerate(texts):
            for variant in ("plain", "fast") if i % 2 == 0 else ("fast", "plain"):
                predictor = plain if variant == "plain" else quick
                t0 = time.perf_counter()
                pred = predictor.predict_one(text)
                lat[variant].append(time.perf_counter() - t0)
                probs[variant].append(pred.probability)
        p50 = {v: 1000 * float(np.percentile(t, 50)) for v, t in lat.items()}
        for variant in ("plain", "fast"):
            t = 1000 * np.asarray(lat[variant])
            rows.append([name, "model.predict" if variant == "plain" else "FastPredictor",
                         f"{p50[variant]:.2f}", f"{np.percentile(t, 99):.2f}",
                         f"{t.mean():.2f}", f"{p50['plain'] / p50[variant]:.1f}x"])
        diff = float(np.max(np.abs(np.subtract(probs["plain"], probs["fast"]))))
        notes.append(f"{name}: FastPredictor built in {1000 * trained.build_seconds:.0f} ms at "
                     f"load; max |P(fast) - P(plain)| over the {len(texts)} reviews "
                     f"{diff:.1e}; {trained.note}")
    words = [len(t.split()) for t in texts]
    header = ["preset", "path", "p50 ms", "p99 ms", "mean ms", "speed-up (p50)"]
    body = (f"{len(texts)} real test reviews of {TARGET_WORDS} +- {WORD_SPREAD} words "
            f"(mean {np.mean(words):.0f} whitespace words), each scored once per path, "
            "paths interleaved; timed: Predictor.predict_one (check text, tokenize, encode, "
            "probability). Target: fast p50 at most 5 ms.\n\n" + common.table(header, rows)
            + "\n\n" + "\n".join(f"- {n}" for n in notes))
    common.write_section("predict_latency", "3. Prediction latency: one typed review", body)


if __name__ == "__main__":
    main()
