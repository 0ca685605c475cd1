"""Choosing the n-gram presets' hyperparameters on a validation split of the training
reviews (never the test set): trains on the first 80 % with the encoder's bigrams counted
there, reports validation accuracy after each epoch and the time.

    IMDB_DATA=../shared/data/aclImdb_v1_labeled.tar.gz .venv/bin/python -m bench.ngram_presets \\
        --preset bigram-fasttext --set bigrams=200000 --set epochs=5
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="bigram-fasttext")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--validation-split", type=float, default=0.2)
    args = ap.parse_args()
    import keras

    from core.config import check, parse_overrides, preset
    from core.data import load_dataset
    from core.models import build_model, compile_model, prepare_model
    from core.training import ngram_arrays

    cfg = preset(args.preset, **parse_overrides(args.set),
                 validation_split=args.validation_split)
    ds = load_dataset()
    check(cfg, len(ds.train), len(ds.test))
    keras.utils.set_random_seed(cfg.seed)
    t0 = time.monotonic()
    n = cfg.train_size or len(ds.train)
    n_fit = n - int(round(n * cfg.validation_split))
    encoder, x = ngram_arrays(ds, cfg, n_fit)
    y = ds.train.head(cfg.train_size).labels.astype("float32")
    print(f"encoder: {len(encoder.bigrams):,} bigrams, rows {x.shape}, "
          f"cut rows {(x[:, 0] != 0).mean():.1%}, {time.monotonic() - t0:.1f} s")
    model = compile_model(build_model(cfg), cfg)
    prepare_model(model, cfg, x[:n_fit], y[:n_fit])
    t1 = time.monotonic()
    hist = model.fit(x[:n_fit], y[:n_fit], batch_size=cfg.batch_size, epochs=cfg.epochs,
                     validation_data=(x[n_fit:], y[n_fit:]), verbose=0, shuffle=True)
    for e, (a, v) in enumerate(zip(hist.history["accuracy"], hist.history["val_accuracy"])):
        print(f"epoch {e + 1}: train {a:.4f} val {v:.4f}")
    print(f"{cfg.to_json()}\nfit {time.monotonic() - t1:.1f} s, total {time.monotonic() - t0:.1f} s")


if __name__ == "__main__":
    main()
