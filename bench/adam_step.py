"""Adam's step: the engine's native ops (LabAdam, LabEmbeddingAdam) vs Keras's own ops.

Two copies of a fast-mode model (same seed, same data) train in one process, one whose
engine takes Adam's step in the native ops and one that leaves it to Keras (the engine
built with core.fast.engine.plain_adam answering no); their epochs alternate, the
order flipping each round, so both see the same machine. Reported: each epoch's process
CPU time (all threads) and the medians' ratio. The two steps give the same weights bit for
bit (tests/test_fast.py), and the copies see the same batches, so they train identically
and their epochs do the same work (checked at the end).

    IMDB_DATA=../shared/data/aclImdb_v1_labeled.tar.gz .venv/bin/python bench/adam_step.py
"""

from __future__ import annotations

import dataclasses
import time

import common
import numpy as np


def main() -> None:
    args = common.flags(__doc__, preset="seed-lstm", train_size=8000, rounds=8)
    from core import worker
    from core.config import preset

    cfg = preset(args.preset, train_size=args.train_size, epochs=1 + args.rounds)
    worker.preload()
    worker.set_threads(cfg)  # as a worker runs it: one intra-op thread on the kernels
    import keras

    from core import fast
    from core.data import load_dataset
    from core.fast import engine
    from core.models import build_model, compile_model

    ds = load_dataset()
    x, y = ds.arrays("train", cfg.top_words, cfg.maxlen, cfg.train_size)
    own_step = engine.plain_adam
    models = {}
    for variant in ("native ops", "Keras's ops"):
        engine.plain_adam = own_step if variant == "native ops" else (lambda optimizer: False)
        keras.utils.set_random_seed(cfg.seed)
        models[variant] = compile_model(build_model(cfg), cfg)
        fast.fit(models[variant], dataclasses.replace(cfg, epochs=1), x, y, None, None, [])
        assert (fast._engine_for(models[variant], fast.make_plan(
            models[variant], cfg.maxlen)).adam is not None) == (variant == "native ops")
    engine.plain_adam = own_step
    cpu: dict[str, list[float]] = {name: [] for name in models}
    for r in range(args.rounds):
        for name in (list(models) if r % 2 == 0 else list(reversed(models))):
            c0 = time.process_time()
            fast.fit(models[name], dataclasses.replace(cfg, epochs=r + 2), x, y, None, None,
                     [], initial_epoch=r + 1)
            cpu[name].append(time.process_time() - c0)
            print(name, r, f"{cpu[name][-1]:.2f}", flush=True)
    for a, b in zip(*(m.get_weights() for m in models.values())):
        np.testing.assert_array_equal(a, b)
    base = float(np.median(cpu["Keras's ops"]))
    rows = [[name, " / ".join(f"{t:.2f}" for t in times), f"{np.median(times):.2f}",
             f"{np.median(times) / base:.3f}"] for name, times in cpu.items()]
    body = (f"{cfg.display_name()} in fast mode on the first {args.train_size} training "
            f"reviews: {args.rounds} epochs of each copy after a first one (tracing), "
            "alternating; the two copies ended with equal weights, bit for bit. CPU s: the "
            "process's CPU time over each epoch, all threads.\n\n"
            + common.table(["Adam's step", "CPU s per epoch", "median",
                            "ratio to Keras's"], rows))
    common.write_section("adam_step", "1e. Adam's step: native ops vs Keras's ops", body)


if __name__ == "__main__":
    main()
