"""What a warm worker prepares while it waits, so its run reaches the first batch at once.

A fresh run spends most of its start-up before the first batch tracing fast mode's compiled
steps (~2 s on the shared 2-core machine), reading the dataset cache (0.1-0.5 s) and
padding it (~1 s for 25,000 reviews). A warm worker (core.warm) does these before it
announces itself (once the run that started it has ended, or a run is queued:
core.worker.wait_until_needed):

- it keeps the dataset view loaded (:func:`dataset` returns it while the data source is
  still the one it was read from), and both splits padded at the likeliest run's
  vocabulary and length (:func:`arrays`: a run's first ``n`` reviews are the first ``n``
  rows; padding all 25,000 takes ~1 s);
- it builds the likeliest model (the first queued run's configuration when fast mode's
  native kernels apply to it, else the seed LSTM preset), compiles it and runs each compiled
  step once on a dummy batch (train, evaluation, prediction), so its graphs are traced and
  optimised; while it waits, it does both again when the next queued run becomes one of
  another kind (:func:`stale`; core.worker.Reprepare looks every ``core.warm.REFRESH_S``).

The run then builds its own model exactly as a cold run does (same seed, same calls, so
the same initial weights and random state) and :func:`adopt` copies that model's variables
(weights and layers' seed-generator states) and its fresh optimizer's variables (step
counter, learning rate, slots) into the prepared twin, which trains in its place. The
traced steps read the variables, so the run computes what a cold run computes, only
without tracing (tests/test_warm.py compares the two). A configuration that differs in
anything the graph depends on (:func:`graph_key`) is built and traced as before.

TensorFlow is imported by :func:`prepare` and :func:`adopt`, not with this module.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from core.config import ARCHITECTURES, TrainConfig, preset

# Settings the prepared graph does not depend on: the seed only sets initial values (copied
# in), the learning rate is an optimizer variable (copied in), the rest size the data.
GRAPH_FREE = ("seed", "name", "epochs", "validation_split", "train_size", "test_size",
              "learning_rate")
DEFAULT_PRESET = "seed-lstm"  # prepared when no queued run says otherwise
DUMMY_STEPS = 16  # the dummy batch's recurrent steps (the native steps take any length)

_kept: dict[str, Any] = {"dataset": None, "fingerprint": None, "arrays": {}, "model": None,
                         "key": None, "tried": None}


def graph_key(cfg: TrainConfig) -> str:
    """What a prepared model's graph depends on: the architecture and the settings it
    reads, except GRAPH_FREE."""
    values = {name: getattr(cfg, name) for name in cfg.uses() if name not in GRAPH_FREE}
    return json.dumps({"architecture": cfg.architecture, **values}, sort_keys=True)


def next_config(store) -> TrainConfig | None:
    """The first queued run's configuration; None when nothing is queued."""
    for run_id in store.queue_order()[:1]:
        try:
            return store.get(run_id, reap=False).config
        except Exception:  # noqa: BLE001 - taken or deleted meanwhile
            break
    return None


def likeliest_config(store) -> TrainConfig:
    """The first queued run's configuration, else the default preset's."""
    return next_config(store) or preset(DEFAULT_PRESET)


def dataset():
    """The dataset: the view this worker kept when its source is still the one resolved
    now (same kind, path and cache fingerprint), else read from the cache."""
    from core.data import fingerprint, load_dataset, resolve_source

    src, kept = resolve_source(), _kept["dataset"]
    if kept is not None and kept.source == src and fingerprint(src) == _kept["fingerprint"]:
        return kept
    return load_dataset(src)


def keep_data(cfg: TrainConfig) -> float:
    """Load and keep the dataset view, and both splits padded for ``cfg`` (read-only; not
    for a model that reads n-grams: its job builds its own rows, core.training.ngram_arrays);
    returns the seconds it took."""
    from core.data import fingerprint

    t0 = time.monotonic()
    ds = dataset()
    words_only = not ARCHITECTURES[cfg.architecture].get("ngrams")
    if ds is _kept["dataset"] and (not words_only
                                   or ("test", cfg.top_words, cfg.maxlen) in _kept["arrays"]):
        return time.monotonic() - t0
    _kept.update(dataset=ds, fingerprint=fingerprint(ds.source), arrays={})
    if words_only:
        for split in ("train", "test"):
            x, y = ds.arrays(split, cfg.top_words, cfg.maxlen)
            x.flags.writeable = y.flags.writeable = False
            _kept["arrays"][split, cfg.top_words, cfg.maxlen] = x, y
    return time.monotonic() - t0


def arrays(ds, split: str, top_words: int, maxlen: int, n: int = 0):
    """``ds.arrays(split, top_words, maxlen, n)``: the first ``n`` rows (0: all) of the
    kept padded split when ``ds`` is the kept dataset and the split was padded alike (the
    same values: padding is row by row), read-only; else padded now."""
    kept = _kept["arrays"].get((split, top_words, maxlen)) if ds is _kept["dataset"] else None
    if kept is None:
        return ds.arrays(split, top_words, maxlen, n)
    x, y = kept
    n = len(y) if n <= 0 else min(n, len(y))
    return x[:n], y[:n]


def prepare(cfg: TrainConfig) -> str:
    """Build, compile and trace ``cfg``'s model (see the module's doc); returns what was
    done, for the warm worker's log. Only where fast mode runs on the native kernels: the
    XLA loops compile once per window (many seconds), plain fit is not fast mode's."""
    from core import fast
    from core.fast.plan import make_plan
    from core.models import build_model, compile_model

    _kept.update(model=None, key=None, tried=graph_key(cfg))  # one prepared model at a time
    use_fast, _ = fast.applies(cfg)
    if not use_fast:
        return f"no model prepared ({cfg.architecture}: plain fit)"
    t0 = time.monotonic()
    model = compile_model(build_model(cfg), cfg)
    model.optimizer.build(model.trainable_variables)
    plan = make_plan(model, cfg.maxlen, training=True)
    engine = fast._engine_for(model, plan)
    if not engine.native:
        return "no model prepared (fast mode runs the XLA loops here)"
    bs = int(cfg.batch_size)
    steps = min(DUMMY_STEPS, plan.steps)
    x = np.zeros((bs, plan.maxlen), np.int32)
    x[:, plan.maxlen - steps * plan.pool_size:] = 1  # one shared non-pad code per row
    y = np.ones(bs, np.float32)
    args = engine.batch_args(x, y, np.arange(bs), steps, bs)
    data, order = (engine.tf.constant(x), engine.tf.constant(y)), engine.epoch_order(
        [np.arange(bs)], bs)
    # Each step traced, optimised and run once; adopt resets the state.
    np.asarray(engine.train_rows(*engine.epoch_args(data, order, 0, bs, steps))[0])
    for step in (engine.eval_step, engine.prob_step):
        np.asarray(step(*args)[0])
    _kept["model"], _kept["key"] = model, graph_key(cfg)
    return f"prepared {cfg.display_name()} ({time.monotonic() - t0:.1f} s)"


def stale(cfg: TrainConfig) -> bool:
    """Whether ``cfg`` is not what this worker last prepared for (its graph or its data)."""
    return _kept["tried"] != graph_key(cfg)


def adopt(model, cfg: TrainConfig):
    """The prepared twin of ``model`` (freshly built and compiled for ``cfg``), holding
    exactly ``model``'s variables and a fresh optimizer's; ``model`` itself when nothing
    matching was prepared. A prepared model is adopted once."""
    twin = _kept["model"]
    if twin is None or _kept["key"] != graph_key(cfg):
        return model
    _kept["model"] = _kept["key"] = None
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)  # as fast.fit would: fresh slots
    pairs = [*zip(twin.variables, model.variables),
             *zip(twin.optimizer.variables, model.optimizer.variables)]
    if (len(twin.variables) != len(model.variables)
            or len(twin.optimizer.variables) != len(model.optimizer.variables)
            or any(a.shape != b.shape or a.dtype != b.dtype for a, b in pairs)):
        return model  # not the same structure after all: train the fresh model
    for dst, src in pairs:
        dst.assign(src)
    return twin


def forget() -> None:
    """Drop what was kept (tests)."""
    _kept.update(dataset=None, fingerprint=None, arrays={}, model=None, key=None, tried=None)
