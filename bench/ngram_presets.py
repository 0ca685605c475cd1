"""Choosing a preset's hyperparameters on a validation split of the training reviews (never
the test set): trains on the first 80 % (an n-gram model's bigrams counted there), reports
validation accuracy after each epoch, the wall time and the process's CPU time (all
threads: robust to other work sharing the cores). Any architecture: fast mode trains where
it applies (core.fast.applies), plain ``fit`` otherwise, as a job would.

    IMDB_DATA=../shared/data/aclImdb_v1_labeled.tar.gz .venv/bin/python -m bench.ngram_presets \\
        --preset bigram-fasttext --set bigrams=200000 --set epochs=5
    IMDB_DATA=... .venv/bin/python -m bench.ngram_presets --preset lstm-best --set units=64
    IMDB_DATA=... .venv/bin/python -m bench.ngram_presets --preset lstm-best --split ids

``--split ids`` validates on each label's highest 20 % of aclImdb file ids instead of the
last 20 % of the shuffled reviews. aclImdb's ids run movie by movie (the order of
Stanford's urls_*.txt lists, which this copy leaves out), so few movies fall on both
sides, as none do between its train and test sets. The last-20 % split shares movies,
rewards models that learn their names, and ran 1-2.5 points above the test set for the
recurrent models; the ids split ran below it (README, fourth round).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np


class EpochClock:
    """Wall and CPU seconds at each epoch's end (a Keras callback, built on first use)."""

    def __init__(self) -> None:
        import keras

        outer = self
        self.marks: list[tuple[float, float]] = []

        class _Cb(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                outer.marks.append((time.monotonic(), time.process_time()))

        self.callback = _Cb()


def by_file_id(ds, fraction: float):
    """``ds`` with its training reviews reordered so that the last ``fraction`` of them are
    each label's highest file ids (core.data sorts aclImdb by label and id, then shuffles
    with SHUFFLE_SEED: that permutation gives every row's id rank)."""
    from core.data import SHUFFLE_SEED, Split

    train = ds.train
    n = len(train)
    half = n // 2
    order = np.random.default_rng(SHUFFLE_SEED).permutation(n)
    if ds.source.kind != "aclimdb" or not np.array_equal(train.labels, order >= half):
        raise SystemExit("--split ids needs the aclImdb archive as core.data shuffles it")
    held = order % half >= half - int(round(half * fraction))
    perm = np.r_[np.flatnonzero(~held), np.flatnonzero(held)]
    flat = np.concatenate([train.codes(i) for i in perm])
    offsets = np.r_[0, np.cumsum(np.diff(train.offsets)[perm])]
    return dataclasses.replace(ds, train=Split(flat, offsets, train.labels[perm],
                                               train.ratings[perm]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="bigram-fasttext")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--validation-split", type=float, default=0.2)
    ap.add_argument("--split", choices=("last", "ids"), default="last",
                    help="validation reviews: the last ones (Keras's validation_split) or "
                    "each label's highest aclImdb file ids (few movies on both sides)")
    args = ap.parse_args()
    import keras

    from bench.common import train_rows
    from core import fast
    from core.config import check, parse_overrides, preset
    from core.data import load_dataset
    from core.models import build_model, compile_model, prepare_model

    cfg = preset(args.preset, **parse_overrides(args.set),
                 validation_split=args.validation_split)
    ds = load_dataset()
    if args.split == "ids":
        if cfg.train_size:
            raise SystemExit("--split ids validates on all the training reviews' ids: "
                             "train_size must be 0")
        ds = by_file_id(ds, cfg.validation_split)
    check(cfg, len(ds.train), len(ds.test))
    keras.utils.set_random_seed(cfg.seed)
    t0, c0 = time.monotonic(), time.process_time()
    n = cfg.train_size or len(ds.train)
    n_fit = n - int(round(n * cfg.validation_split))
    encoder, x, y = train_rows(ds, cfg, n_fit)
    if encoder is not None:
        print(f"encoder: {len(encoder.bigrams):,} bigrams, rows {x.shape}, "
              f"cut rows {(x[:, 0] != 0).mean():.1%}, {time.monotonic() - t0:.1f} s")
    else:
        print(f"rows {x.shape}, cut rows {(x[:, 0] != 0).mean():.1%}")
    model = compile_model(build_model(cfg), cfg)
    prepare_model(model, cfg, x[:n_fit], y[:n_fit])
    use_fast, reason = fast.applies(cfg)
    print(f"{model.count_params():,} parameters; {reason}")
    clock = EpochClock()
    t1, c1 = time.monotonic(), time.process_time()
    val = (x[n_fit:], y[n_fit:])
    if use_fast:
        hist = fast.fit(model, cfg, x[:n_fit], y[:n_fit], None, val, [clock.callback])
    else:
        hist = model.fit(x[:n_fit], y[:n_fit], batch_size=cfg.batch_size, epochs=cfg.epochs,
                         validation_data=val, verbose=0, shuffle=True,
                         callbacks=[clock.callback])
    marks = [(t1, c1), *clock.marks]
    for e, (a, v) in enumerate(zip(hist.history["accuracy"], hist.history["val_accuracy"])):
        wall = marks[e + 1][0] - marks[e][0]
        cpu = marks[e + 1][1] - marks[e][1]
        print(f"epoch {e + 1}: train {a:.4f} val {v:.4f} ({wall:.0f} s wall, {cpu:.0f} s CPU)")
    best = int(np.argmax(hist.history["val_accuracy"]))
    print(f"{cfg.to_json()}\nfit {time.monotonic() - t1:.1f} s wall, "
          f"{time.process_time() - c1:.1f} s CPU; total {time.monotonic() - t0:.1f} s wall, "
          f"{time.process_time() - c0:.1f} s CPU; best epoch {best + 1}")


if __name__ == "__main__":
    main()
