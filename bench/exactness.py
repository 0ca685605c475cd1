"""Exactness: fast mode vs the padded model, per architecture (max absolute differences).

For random weights (large, with slow forget/update gates so the padding state matters),
batches of mixed lengths (empty, very short, around and beyond maxlen) and of short
reviews only: outputs and every trainable weight's gradient of the mean BCE from the
compiled fast path (core.fast.batch_gradients) against tf.GradientTape on model(x); and
FastPredictor.predict_padded against model.predict. The same checks, with a 1e-5 bound,
are tests/test_fast.py; this prints the actual figures.

    .venv/bin/python bench/exactness.py
"""

from __future__ import annotations

import common
import numpy as np

# Small models: the check is about the function, not the size.
SMALL = {"maxlen": 48, "units": 8, "top_words": 50, "embedding_dim": 6, "conv_filters": 5,
         "kernel_size": 3, "pool_size": 2, "dropout": 0.0, "seed": 3}
CASES = [("lstm", {}), ("gru", {}), ("stacked-lstm", {}), ("cnn-lstm", {}),
         ("cnn-lstm", {"kernel_size": 4, "pool_size": 3, "maxlen": 47}),
         ("cnn-lstm", {"kernel_size": 5, "pool_size": 2, "maxlen": 45}),
         ("lstm-dropout", {}), ("cnn-lstm-dropout", {})]
MIXED = [0, 1, 2, 3, 4, 5, 9, 17, 30, 47, 48, 49, 60, 100]
SHORT = [0, 1, 1, 2, 3, 4, 5, 6, 7, 9, 11, 13, 17, 20]
SLOW_GATE_BIAS = 2.5  # added to forget/update gate biases


def main() -> None:
    common.use_real_data()
    import keras
    import tensorflow as tf

    from core import fast
    from core.config import load_config
    from core.models import build_model, compile_model
    from core.text import pad_pre

    rows = []
    for arch, extra in CASES:
        cfg = load_config({**SMALL, "architecture": arch, **extra})
        keras.utils.set_random_seed(1)
        model = compile_model(build_model(cfg), cfg)
        rng = np.random.default_rng(1)
        for v in model.trainable_variables:
            v.assign(rng.normal(0.0, 0.5, v.shape).astype(np.float32))
        for layer in model.layers:
            if isinstance(layer, (keras.layers.LSTM, keras.layers.GRU)):
                bias, u = layer.cell.bias.numpy(), layer.cell.units
                gate = slice(u, 2 * u) if isinstance(layer, keras.layers.LSTM) \
                    else (..., slice(0, u))
                bias[gate] += SLOW_GATE_BIAS
                layer.cell.bias.assign(bias)
        d_out = d_grad = d_pred = g_max = 0.0
        for lengths in (MIXED, SHORT):
            seqs = [list(rng.integers(1, cfg.top_words, n)) for n in lengths]
            x = pad_pre(seqs, cfg.maxlen)
            y = rng.integers(0, 2, len(x)).astype(np.float32)
            with tf.GradientTape() as tape:
                p_ref = model(x, training=False)
                loss = tf.reduce_mean(keras.losses.binary_crossentropy(y[:, None], p_ref))
            g_ref = [tf.convert_to_tensor(g).numpy()
                     for g in tape.gradient(loss, model.trainable_variables)]
            p, _, grads = fast.batch_gradients(model, cfg, x, y)
            d_out = max(d_out, float(np.abs(p - p_ref.numpy()[:, 0]).max()))
            d_grad = max(d_grad, max(float(np.abs(a - b).max()) for a, b in zip(grads, g_ref)))
            g_max = max(g_max, max(float(np.abs(b).max()) for b in g_ref))
            pred = fast.FastPredictor.try_build(model, cfg).predict_padded(x)
            d_pred = max(d_pred, float(np.abs(pred - model.predict(x, verbose=0)[:, 0]).max()))
        name = arch + "".join(f" {k}={v}" for k, v in extra.items()) + (
            " (dropout 0)" if "dropout" in arch else "")
        rows.append([name, f"{d_out:.1e}", f"{d_grad:.1e}", f"{g_max:.2f}", f"{d_pred:.1e}"])
        print(rows[-1], flush=True)
    off = []
    for arch in ("lstm-dropout", "cnn-lstm-dropout", "bilstm"):
        used, reason = fast.applies(load_config({**SMALL, "architecture": arch,
                                                 "dropout": 0.2}))
        label = f"{arch} (dropout 0.2)" if "dropout" in arch else arch
        off.append(f"{label}: fast training {'on' if used else 'off'}: {reason}")
    body = ("Max absolute differences over a mixed-length batch and a short-review batch "
            "(14 reviews each), fast vs padded Keras model; 'largest gradient' is the largest "
            "absolute gradient entry, for scale. Dropout layers are identities at rate 0 (training) "
            "and at inference (prediction).\n\n"
            + common.table(["architecture", "outputs", "gradients (all weights)",
                            "largest gradient", "FastPredictor vs predict"], rows)
            + "\n\n" + "\n".join(f"- {n}" for n in off))
    common.write_section("exactness", "0. Exactness: fast vs padded model", body)


if __name__ == "__main__":
    main()
