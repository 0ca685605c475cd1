"""Accuracy effect of fast mode: plain vs fast training, several seeds each.

Fast mode computes the same gradients, but batches are bucketed by length (reviews of
similar length train together) instead of Keras's uniform shuffle, and the padding row of
the embedding gets a different sparse-Adam update (see tests/test_fast.py). This measures
the net effect on test accuracy: same subset, same seeds, mean and spread.

    IMDB_DATA=/work/shared/data/aclImdb_v1_labeled.tar.gz .venv/bin/python bench/accuracy_seeds.py
"""

from __future__ import annotations

import dataclasses

import common
import numpy as np


def main() -> None:
    args = common.flags(__doc__, train_size=8000, test_size=5000, epochs=2, seeds="1,2,3",
                         presets="seed-lstm,seed-cnn-lstm")

    import keras

    from core import fast
    from core.config import preset
    from core.data import load_dataset
    from core.models import build_model, compile_model

    ds = load_dataset()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows, summary = [], []
    for name in args.presets.split(","):
        acc: dict[str, list[float]] = {"plain": [], "fast": []}
        secs: dict[str, list[float]] = {"plain": [], "fast": []}
        base = preset(name, train_size=args.train_size, test_size=args.test_size,
                      epochs=args.epochs)
        x, y = ds.arrays("train", base.top_words, base.maxlen, base.train_size)
        xt, yt = ds.arrays("test", base.top_words, base.maxlen, base.test_size)
        for seed in seeds:
            cfg = dataclasses.replace(base, seed=seed)
            for variant in ("plain", "fast"):
                keras.utils.set_random_seed(seed)  # same initial weights for both
                model = compile_model(build_model(cfg), cfg)
                if variant == "plain":
                    seconds, _ = common.timed(lambda m=model, c=cfg, x=x, y=y: m.fit(
                        x, y, batch_size=c.batch_size, epochs=c.epochs, shuffle=True,
                        verbose=0))
                else:
                    seconds, _ = common.timed(lambda m=model, c=cfg, x=x, y=y: fast.fit(
                        m, c, x, y, None, None, []))
                acc[variant].append(common.test_accuracy(model, xt, yt, cfg.maxlen))
                secs[variant].append(seconds)
                print(f"{name} seed {seed} {variant}: {100 * acc[variant][-1]:.2f} % "
                      f"({seconds:.0f} s)", flush=True)
            rows.append([name, seed, f"{100 * acc['plain'][-1]:.2f}",
                         f"{100 * acc['fast'][-1]:.2f}",
                         f"{100 * (acc['fast'][-1] - acc['plain'][-1]):+.2f}"])
        for variant in ("plain", "fast"):
            a = 100 * np.asarray(acc[variant])
            summary.append([name, variant, f"{a.mean():.2f}", f"{a.std(ddof=1):.2f}",
                            f"{a.min():.2f} .. {a.max():.2f}", f"{np.sum(secs[variant]):.0f}"])
    body = (f"Train: first {args.train_size} training reviews, {args.epochs} epochs; test: "
            f"first {args.test_size} test reviews; seeds {args.seeds} (the same seed gives "
            "both variants the same initial weights; the batch order differs: Keras's "
            "shuffle vs length buckets). A subset and fewer epochs than the tutorial, to keep "
            "this within minutes, so accuracies are below the tutorial's 87-89 % and vary "
            "by several points from seed to seed for either variant: read the means against "
            "the spreads.\n\n"
            + common.table(["preset", "seed", "plain acc %", "fast acc %", "fast - plain"],
                           rows)
            + "\n\n" + common.table(["preset", "variant", "mean acc %", "std (n-1)", "range",
                                     "total train s"], summary))
    common.write_section("accuracy_seeds", "1b. Accuracy effect: plain vs fast, 3 seeds", body)


if __name__ == "__main__":
    main()
