"""Exactness: fast mode vs the padded model, per architecture (max absolute differences).

For random weights (large, with slow forget/update gates so the padding state matters),
batches of mixed lengths (empty, very short, around and beyond maxlen) and of short
reviews only: outputs and every trainable weight's gradient of the mean BCE from the
compiled fast path (core.fast.batch_gradients) against tf.GradientTape on model(x); and
FastPredictor.predict_padded against model.predict. Training is checked on both recurrence
back ends: core/native's LSTM kernels and the XLA loops (LAB_NATIVE=0; GRU layers always
use these). The models, weights and batches are core/fast_check.py's, which
tests/test_fast.py asserts within 1e-5; this prints the actual figures.

    .venv/bin/python bench/exactness.py
"""

from __future__ import annotations

import common
import numpy as np


def main() -> None:
    import os

    common.use_real_data()
    from core import fast, native
    from core.fast_check import (
        EXACT_CASES,
        MIXED_LENGTHS,
        SHORT_LENGTHS,
        max_diff,
        random_model,
        reference,
        reviews,
        small_config,
    )

    rows = []
    for arch, extra in EXACT_CASES:
        cfg = small_config(arch, **extra)
        cells = []
        d_pred = g_max = 0.0
        for switch in ("1", "0"):  # native kernels, then the XLA loops
            os.environ[native.SWITCH] = switch
            model = random_model(cfg)  # a new model: a new engine, built for this back end
            d_out = d_grad = 0.0
            for lengths in (MIXED_LENGTHS, SHORT_LENGTHS):
                x, y = reviews(cfg, lengths)
                p_ref, _, g_ref = reference(model, x, y)
                p, _, grads = fast.batch_gradients(model, cfg, x, y)
                d_out = max(d_out, float(np.abs(p - p_ref).max()))
                d_grad = max(d_grad, max_diff(grads, g_ref))
                g_max = max(g_max, max(float(np.abs(b).max()) for b in g_ref))
                pred = fast.FastPredictor.try_build(model, cfg).predict_padded(x)
                d_pred = max(d_pred, float(np.abs(pred - model.predict(x, verbose=0)[:, 0]).max()))
            used = fast._engine_for(model, fast.make_plan(model, cfg.maxlen)).native
            cells.append(f"{d_out:.1e} / {d_grad:.1e}" if used or switch == "0"
                         else "(XLA loops: GRU)")
        os.environ.pop(native.SWITCH, None)
        name = arch + "".join(f" {k}={v}" for k, v in extra.items() if k != "dropout") + (
            " (dropout 0)" if "dropout" in arch else "")
        rows.append([name, *cells, f"{g_max:.2f}", f"{d_pred:.1e}"])
        print(rows[-1], flush=True)
    off = []
    for arch in ("lstm-dropout", "cnn-lstm-dropout", "bilstm"):
        used, reason = fast.applies(small_config(arch, dropout=0.2))
        label = f"{arch} (dropout 0.2)" if "dropout" in arch else arch
        off.append(f"{label}: fast training {'on' if used else 'off'}: {reason}")
    body = ("Max absolute differences over a mixed-length batch and a short-review batch "
            "(14 reviews each), fast vs padded Keras model; 'largest gradient' is the largest "
            "absolute gradient entry, for scale. Dropout layers are identities at rate 0 (training) "
            "and at inference (prediction).\n\n"
            + common.table(["architecture", "native kernels: outputs / gradients",
                            "XLA loops: outputs / gradients", "largest gradient",
                            "FastPredictor vs predict"], rows)
            + f"\n\nNative kernels on this machine: {common.kernels()}."
            + "\n\n" + "\n".join(f"- {n}" for n in off))
    common.write_section("exactness", "0. Exactness: fast vs padded model", body)


if __name__ == "__main__":
    main()
