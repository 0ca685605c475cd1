"""Checks that fast mode computes the padded model's function: shared by the exactness
tests (tests/test_fast.py, which assert ATOL) and bench/exactness.py (which reports the
differences it measures).

Small models (maxlen ~48, 8 units, 50 words) so every check takes seconds. Weights are
drawn large, with slow recurrent gates, so that the padding prefix visibly changes the
outputs: a fast path that skipped or mis-aligned the prefix fails the checks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from core.config import TrainConfig, input_dim, load_config
from core.text import pad_pre

# Tolerance for "the same function" in float32.
ATOL = 1e-5
# Small settings shared by every check model.
SMALL = {"maxlen": 48, "units": 8, "top_words": 50, "embedding_dim": 6, "conv_filters": 5,
         "kernel_size": 3, "pool_size": 2, "dropout": 0.0, "batch_size": 16, "seed": 3}
# Kept lengths in the mixed batch: empty, very short, around and above maxlen.
MIXED_LENGTHS = [0, 1, 2, 3, 4, 5, 9, 17, 30, 47, 48, 49, 60, 100]
# A batch whose longest review is short, so most of every row is the shared prefix
# (as many rows as MIXED_LENGTHS: one compiled shape serves both).
SHORT_LENGTHS = [0, 1, 1, 2, 3, 4, 5, 6, 7, 9, 11, 13, 17, 20]
# (architecture, overrides): every configuration where fast mode applies.
EXACT_CASES = [
    ("lstm", {}),
    ("gru", {}),
    ("stacked-lstm", {}),
    ("lstm-maxpool", {}),
    ("lstm-maxpool-dropout", {"dropout": 0.5}),  # after the pooling: exact at any rate
    ("cnn-lstm-maxpool-dropout", {"dropout": 0.5}),
    ("cnn-lstm-maxpool-dropout", {"kernel_size": 5, "pool_size": 2, "maxlen": 45}),
    ("cnn-lstm", {}),
    ("cnn-lstm", {"kernel_size": 4, "pool_size": 3, "maxlen": 47}),  # even kernel, ragged pool
    ("cnn-lstm", {"kernel_size": 5, "pool_size": 2, "maxlen": 45}),  # halo wider than pool
    ("cnn-lstm", {"kernel_size": 2, "pool_size": 4, "maxlen": 50}),  # pool drops the last codes
    ("cnn-lstm-bigrams", {"bigrams": 30}),  # codes hold bigram ids too
    ("lstm-dropout", {"dropout": 0.0}),
    ("cnn-lstm-dropout", {"dropout": 0.0}),
]
# Added to the forget (LSTM) / update (GRU) gate biases: the state then drifts slowly
# over the padding, so the state after k pad codes still depends on k at k ~ 40.
SLOW_GATE_BIAS = 2.5


def case_id(arch: str, overrides: dict[str, Any]) -> str:
    return f"{arch}-{'-'.join(f'{k}{v}' for k, v in overrides.items())}".rstrip("-")


def small_config(arch: str, **overrides: Any) -> TrainConfig:
    return load_config({**SMALL, "architecture": arch, **overrides})


def random_model(cfg: TrainConfig, seed: int = 1, scale: float = 0.5):
    """A compiled model with large random weights and slow recurrent gates, so that the
    padding prefix matters and its length matters."""
    import keras

    from core.models import build_model, compile_model

    keras.utils.set_random_seed(seed)
    model = compile_model(build_model(cfg), cfg)
    rng = np.random.default_rng(seed)
    for v in model.trainable_variables:
        v.assign(rng.normal(0.0, scale, v.shape).astype(np.float32))
    for layer in model.layers:
        if isinstance(layer, (keras.layers.LSTM, keras.layers.GRU)):
            bias = np.asarray(layer.cell.bias)
            u = layer.cell.units
            gate = slice(u, 2 * u) if isinstance(layer, keras.layers.LSTM) else (..., slice(0, u))
            bias[gate] += SLOW_GATE_BIAS
            layer.cell.bias.assign(bias)
    return model


def reviews(cfg: TrainConfig, lengths: list[int], seed: int = 0
            ) -> tuple[np.ndarray, np.ndarray]:
    """Padded rows ('pre', as training pads) of random ids >= 1 (bigram ids included where
    the model reads them), and labels."""
    rng = np.random.default_rng(seed)
    seqs = [list(rng.integers(1, input_dim(cfg), n)) for n in lengths]
    return pad_pre(seqs, cfg.maxlen), rng.integers(0, 2, len(lengths)).astype(np.float32)


def reference(model, x: np.ndarray, y: np.ndarray
              ) -> tuple[np.ndarray, float, list[np.ndarray]]:
    """The plain padded model: outputs, mean BCE and its gradient per trainable weight,
    via tf.GradientTape on ``model(x)``."""
    import keras
    import tensorflow as tf

    with tf.GradientTape() as tape:
        p = model(x, training=False)
        loss = tf.reduce_mean(keras.losses.binary_crossentropy(y[:, None], p))
    grads = tape.gradient(loss, model.trainable_variables)
    return np.asarray(p)[:, 0], float(loss), [np.asarray(tf.convert_to_tensor(g)) for g in grads]


def max_diff(a, b) -> float:
    """Largest absolute difference between two lists of arrays."""
    return float(max(np.abs(np.asarray(u) - np.asarray(v)).max() for u, v in zip(a, b)))
