"""Test-set evaluation: model.predict on padded rows vs fast mode's exact paths (issue 15).

One seed-preset model (its initial weights: the cost does not depend on the values) scores
the test set three ways in one process: Keras ``model.predict`` over all padded rows (what
a job did before), the training engine's forward pass in length-sorted batches
(``fast.predict``, native kernels) and the numpy ``FastPredictor``. Each is timed after a
first, warm-up call on a small slice; the max |difference| to model.predict is reported.

    IMDB_DATA=../shared/data/aclImdb_v1_labeled.tar.gz .venv/bin/python bench/eval_speed.py
"""

from __future__ import annotations

import common
import numpy as np


def variants(model, cfg, batches: list[int]) -> dict:
    """name -> function scoring padded rows (P(positive), one per row)."""
    from core import fast

    out = {"model.predict (padded, batch 512)":
           lambda x: np.asarray(model.predict(x, batch_size=512, verbose=0)).ravel()}
    for b in batches:
        out[f"fast.predict (engine, batch {b})"] = \
            lambda x, b=b: fast.predict(model, cfg, x, batch=b)
    predictor = fast.FastPredictor.try_build(model, cfg)
    out["FastPredictor (numpy)"] = predictor.predict_padded
    return out


def main() -> None:
    args = common.flags(__doc__, preset="seed-lstm", test_size=25000, batches="64,128,256",
                        markdown=0)
    import keras

    from core.config import preset
    from core.data import load_dataset
    from core.models import build_model, compile_model

    cfg = preset(args.preset, test_size=args.test_size)
    x, _ = load_dataset().arrays("test", cfg.top_words, cfg.maxlen, cfg.test_size)
    keras.utils.set_random_seed(cfg.seed)
    model = compile_model(build_model(cfg), cfg)
    rows, ref = [], None
    for name, fn in variants(model, cfg, [int(b) for b in args.batches.split(",")]).items():
        warm, _ = common.timed(lambda fn=fn: fn(x[:600]))  # traces/compiles
        seconds, p = common.timed(lambda fn=fn: fn(x))
        ref = p if ref is None else ref
        diff = float(np.abs(np.asarray(p) - ref).max())
        rows.append([name, f"{warm:.1f}", f"{seconds:.1f}", f"{diff:.1e}"])
        print(rows[-1], flush=True)
    body = (f"{args.preset}, the first {len(x):,} test reviews padded to {cfg.maxlen}; "
            f"initial weights. Fast mode's loops: {common.kernels()}. 'warm-up' is a first "
            "call on 600 rows (tracing); 'seconds' the whole test set after it.\n\n"
            + common.table(["variant", "warm-up s", "seconds", "max abs diff vs predict"], rows))
    if args.markdown:
        common.write_section("eval_speed",
                             "9. Test-set evaluation: model.predict vs the fast paths", body)
    else:
        print(body)


if __name__ == "__main__":
    main()
