"""Attribution latency: occlusion of every word of a ~200-word review, plain vs fast.

Predictor.attribution (core/predict.py) scores the review and one variant per known word
(the word replaced by the OOV code) in one batch: ~200 rows through model.predict
(plain) or FastPredictor (fast). Timed end to end on several real test reviews of 200
words, paths interleaved; the per-word deltas of both paths are compared.

    IMDB_DATA=/work/shared/data/aclImdb_v1_labeled.tar.gz .venv/bin/python bench/attribution_latency.py
"""

from __future__ import annotations

import time

import common
import numpy as np

WORDS = 200  # review length in words
REPEATS = 3  # timings per review and path


def main() -> None:
    args = common.flags(__doc__, reviews=5, presets="seed-lstm,seed-cnn-lstm")
    import bench_models
    from predict_latency import reviews_near

    from core.data import load_dataset

    ds = load_dataset()
    texts = reviews_near(ds, WORDS, 0, args.reviews)
    rows, notes = [], []
    for name in args.presets.split(","):
        trained = bench_models.trained_predictors(name, ds)
        plain, quick = trained.plain, trained.fast
        for p in (plain, quick):
            p.attribution(texts[0])  # warm-up
        lat: dict[str, list[float]] = {"plain": [], "fast": []}
        worst, n_rows = 0.0, []
        for text in texts:
            results = {}
            for r in range(REPEATS):
                for variant in ("plain", "fast") if r % 2 == 0 else ("fast", "plain"):
                    predictor = plain if variant == "plain" else quick
                    t0 = time.perf_counter()
                    results[variant] = predictor.attribution(text)
                    lat[variant].append(time.perf_counter() - t0)
            deltas = [np.array([w.delta for w in results[v][1]]) for v in ("plain", "fast")]
            worst = max(worst, float(np.abs(deltas[0] - deltas[1]).max()),
                        abs(results["plain"][0] - results["fast"][0]))
            n_rows.append(1 + sum(w.status == "known" for w in results["fast"][1]))
        med = {v: 1000 * float(np.median(t)) for v, t in lat.items()}
        for variant in ("plain", "fast"):
            t = 1000 * np.asarray(lat[variant])
            rows.append([name, "model.predict" if variant == "plain" else "FastPredictor",
                         f"{med[variant]:.0f}", f"{t.min():.0f}", f"{t.max():.0f}",
                         f"{med['plain'] / med[variant]:.1f}x"])
        notes.append(f"{name}: {np.mean(n_rows):.0f} rows per batch on average; max |delta "
                     f"difference| between paths {worst:.1e}")
    header = ["preset", "path", "median ms", "min ms", "max ms", "speed-up (median)"]
    body = (f"{len(texts)} real test reviews of exactly {WORDS} words, {REPEATS} timings "
            "each per path, interleaved; timed: Predictor.attribution (encode, build the "
            "occluded variants, score all rows in one batch). Target: at most 250 ms.\n\n"
            + common.table(header, rows) + "\n\n" + "\n".join(f"- {n}" for n in notes))
    common.write_section("attribution_latency", "4. Attribution latency: 200-word review", body)


if __name__ == "__main__":
    main()
