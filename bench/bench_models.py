"""Trained models for the latency benchmarks, cached in bench/out/ (git-ignored).

Latency does not depend on how good a model is, but the probabilities compared between
the plain and fast paths should be those of a trained model, so each preset is trained
once (fast mode, 2,000 reviews, 1 epoch) and reused.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import common

OUT = common.ROOT / "bench" / "out"
TRAIN_SIZE = 2000  # reviews used to train the benchmark models
EPOCHS = 1


@dataclass
class Trained:
    plain: object  # core.predict.Predictor scoring with model.predict
    fast: object  # the same with FastPredictor
    build_seconds: float  # FastPredictor.try_build at load
    note: str


def trained_predictors(name: str, ds) -> Trained:
    import keras

    from core import fast
    from core.config import preset
    from core.models import build_model, compile_model
    from core.predict import Predictor

    cfg = preset(name, train_size=TRAIN_SIZE, epochs=EPOCHS)
    path = Path(OUT / f"{name}-{TRAIN_SIZE}x{EPOCHS}.keras")
    if path.exists():
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
        note = f"model trained earlier ({path.name})"
    else:
        keras.utils.set_random_seed(cfg.seed)
        model = compile_model(build_model(cfg), cfg)
        x, y = ds.arrays("train", cfg.top_words, cfg.maxlen, cfg.train_size)
        fast.fit(model, cfg, x, y, None, None, [])
        OUT.mkdir(parents=True, exist_ok=True)
        model.save(path)
        note = f"model trained here ({TRAIN_SIZE} reviews, {EPOCHS} epoch, fast mode)"
    encoder = ds.encoder(cfg.top_words, cfg.maxlen)
    t0 = time.perf_counter()
    quick = fast.FastPredictor.try_build(model, cfg)
    build = time.perf_counter() - t0
    return Trained(Predictor(model, encoder), Predictor(model, encoder, quick), build, note)
