"""Graph-compiled train/eval steps (the engine) and what drives them: fit, predict,
batch_gradients, the fast evaluation, and the batching by length.

TensorFlow and Keras are imported when an engine is built, not with this module.
"""

from __future__ import annotations

import contextlib
import gc
import math
import weakref
from typing import Any

import numpy as np

from core import native
from core.config import TrainConfig
from core.fast.forward import _Forward
from core.fast.plan import XLA_ONLY, Plan, applies, inference_plan, make_plan
from core.fast.update import adam_step, gradients, plain_adam

# Salt mixed into cfg.seed for the bucket shuffle, so it differs from Keras's own streams.
SHUFFLE_SALT = 0x5EED


class _Engine(_Forward):
    """Graph-compiled train/eval steps for one model.

    With the native LSTM kernels (core/native) a batch's window is exactly its own
    steps, passed as a tensor: one trace serves every length. The XLA loops compile once
    per window size instead, so there windows are the few sizes of Plan.windows (one
    trace each) and a batch runs its steps inside the smallest that fits."""

    def __init__(self, model, plan: Plan):
        super().__init__(model, plan)
        self.optimizer = getattr(model, "optimizer", None)  # None: not compiled
        kernels = native.ops()[0] if self.native and plain_adam(self.optimizer) else None
        self.adam = kernels and kernels.lab_adam  # None: Keras's own Adam step
        self.embedding_adam = kernels and kernels.lab_embedding_adam
        self._ints: dict[int, Any] = {}
        self.train_rows = self._compiled(self._train_rows, rows=True)
        self.eval_step = self._compiled(self._eval_step)
        self.grad_step = self._compiled(self._grad_step)
        self.prob_step = self._compiled(self._prob_step)

    def _compiled(self, fn, rows: bool = False):
        """``fn`` as a tf.function: traced per window (XLA loops) or, native, once per
        batch size with the codes' length and the window left open, and then called as
        that concrete function (skipping tf.function's look-up of its traces: ~0.4 ms of
        Python a batch). ``rows``: fn takes the training data and the epoch's batches as
        tensors, and a batch by number (_train_rows), else a batch's own arrays."""
        tf = self.tf
        if not self.native:
            return tf.function(fn)
        traced: dict[int, Any] = {}
        spec = tf.TensorSpec

        def signature(batch: int) -> list:
            if rows:
                return [spec([None, None], tf.int32), spec([None], tf.float32),
                        spec([None, batch], tf.int32)] + [spec([], tf.int32)] * 4
            return [spec([batch, None], tf.int32), spec([batch], tf.float32),
                    spec([batch], tf.float32), spec([], tf.int32), spec([], tf.int32)]

        def call(*args):
            batch = args[2].shape[1] if rows else len(args[0])
            if batch not in traced:
                traced[batch] = tf.function(
                    fn, input_signature=signature(batch)).get_concrete_function()
            return traced[batch](*args)

        return call

    def _losses(self, codes, y, w, n_steps, window, training: bool):
        tf = self.tf
        logits = self.logits(codes, n_steps, window, training)
        per = tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=logits)
        hit = tf.cast(tf.cast(tf.sigmoid(logits) > 0.5, tf.float32) == y, tf.float32)
        return tf.reduce_sum(per * w), tf.reduce_sum(hit * w)

    def _train_step(self, codes, y, w, n_steps, window):
        tf, model = self.tf, self.model
        variables = model.trainable_variables
        table = self.plan.embedding.embeddings
        # Two passes (see update.gradients) on the native kernels: the XLA loops' compiled
        # functions cannot be differentiated by a persistent tape (XLA then has to keep
        # their loops' intermediates, in lists of no fixed size).
        two_passes = self.native and any(v is table for v in variables)
        with tf.GradientTape(persistent=two_passes) as tape:
            self.cut_prefix = tape if two_passes else None
            loss_sum, hits = self._losses(codes, y, w, n_steps, window, training=True)
            loss = loss_sum / tf.reduce_sum(w)  # Keras: mean over the batch's reviews
        self.cut_prefix = None
        grads, parts = gradients(self, tape, loss, variables)
        if self.adam is None:
            model.optimizer.apply(grads, variables)
        else:
            adam_step(self, grads, variables, parts)
        return loss, hits

    def _train_rows(self, x, y, order, b, count, n_steps, window):
        """_train_step on batch ``b`` of an epoch, gathered here from the training data
        ``x``, ``y`` by ``order`` (rows b: the batch's row numbers, the first ``count`` of
        them real, the rest filled up with all-pad rows of weight 0): the same codes,
        labels and weights as batch_args makes on the host, with no array to convert per
        batch (it took ~0.15 ms of Python a batch, between the batches' ops)."""
        tf = self.tf
        batch = order.shape[1]
        w = tf.cast(tf.range(batch) < count, tf.float32)
        lo, hi = self.plan.code_span(window, *((tf.maximum, tf.minimum)
                                               if tf.is_tensor(window) else (max, min)))
        rows = order[b]
        codes = tf.gather(x, rows)[:, lo:hi] * tf.cast(w[:, None], tf.int32)
        return self._train_step(codes, tf.gather(y, rows) * w, w, n_steps, window)

    def _grad_step(self, codes, y, w, n_steps, window):
        tf, variables = self.tf, self.model.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.logits(codes, n_steps, window, training=False)
            per = tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=logits)
            loss = tf.reduce_sum(per * w) / tf.reduce_sum(w)
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, variables)]
        return tf.sigmoid(logits), loss, grads

    def _eval_step(self, codes, y, w, n_steps, window):
        return self._losses(codes, y, w, n_steps, window, training=False)

    def _prob_step(self, codes, y, w, n_steps, window):
        """P(positive) per row (labels and weights unused: one signature for all steps)."""
        return self.tf.sigmoid(self.logits(codes, n_steps, window, training=False))

    # Host side: slicing windows out of padded rows.
    def batch_args(self, x: np.ndarray, y: np.ndarray, rows: np.ndarray, n_steps: int,
                   batch: int) -> tuple:
        """The step functions' arguments for ``rows``: their codes cut to the window for
        n_steps and labels, padded with all-pad rows (weight 0) up to ``batch`` rows, so
        every batch of a window has one shape: (codes, labels, weights, n_steps, window)."""
        n_steps, window = self._window(n_steps)
        lo, hi = self.plan.code_span(window)
        codes = np.zeros((batch, hi - lo), np.int32)
        codes[: len(rows)] = x[rows, lo:hi]
        labels = np.zeros(batch, np.float32)
        labels[: len(rows)] = y[rows]
        weights = np.zeros(batch, np.float32)
        weights[: len(rows)] = 1.0
        return (codes, labels, weights, *self._step_args(n_steps, window))

    def epoch_args(self, data: tuple, order, b: int, count: int, n_steps: int) -> tuple:
        """train_rows's arguments for batch ``b`` of an epoch (data: the training codes
        and labels as tensors; order: the epoch's batches, epoch_order) of ``count`` rows
        that need ``n_steps`` steps: every one a tensor made before."""
        return (*data, order, self._int32(b), self._int32(count),
                *self._step_args(*self._window(n_steps)))

    def _window(self, n_steps: int) -> tuple[int, int]:
        """(n_steps, window) for a batch whose longest row needs ``n_steps`` steps: the
        native kernels run exactly those, the XLA loops the smallest window that fits."""
        n_steps = max(n_steps, 1)  # an all-padding batch still runs its last step
        return n_steps, n_steps if self.native else self.plan.window_for(n_steps)

    def _step_args(self, n_steps: int, window: int) -> tuple:
        """The steps' last two arguments: tensors, and for the XLA loops a static window."""
        return self._int32(n_steps), self._int32(window) if self.native else window

    def epoch_order(self, batches: list[np.ndarray], batch: int):
        """The epoch's batches as one (batches, batch) int32 tensor of row numbers, a short
        batch filled up with row 0 (train_rows gives those rows weight 0 and pad codes)."""
        order = np.zeros((len(batches), batch), np.int32)
        for i, rows in enumerate(batches):
            order[i, : len(rows)] = rows
        return self.tf.constant(order)

    def _int32(self, value: int):
        """A small count (steps, a batch's number or rows) as an int32 scalar tensor, made
        once per value (a few hundred; a few thousand batches at most)."""
        if value not in self._ints:
            self._ints[value] = self.tf.constant(value, self.tf.int32)
        return self._ints[value]


# Training engines per model (see _engine_for).
_ENGINES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _engine_for(model, plan: Plan) -> _Engine:
    """The model's engine, reused across fit calls while its optimizer is the same (as
    Keras keeps its train function), so epochs run as separate calls compile once."""
    engine = _ENGINES.get(model)
    if engine is None or engine.optimizer is not getattr(model, "optimizer", None):
        engine = _ENGINES[model] = _Engine(model, plan)
    return engine


def trains_native(cfg: TrainConfig) -> bool:
    """Whether ``cfg`` trains on the native kernels, known before its model is built: fast
    mode applies, its recurrent layers are LSTMs, and the kernels build here (building them
    the first time, which loads TensorFlow but runs no op)."""
    return applies(cfg)[0] and cfg.architecture not in XLA_ONLY and native.enabled()


def loops(model, cfg: TrainConfig) -> str:
    """Which recurrence code fast training runs for this model, for the run's record."""
    if _engine_for(model, make_plan(model, cfg.maxlen, training=True)).native \
            or not native.enabled():
        return native.status()  # the kernels, or why the XLA loops
    return "XLA-compiled loops (GRU layers have no native kernel)"


# -- batching by length ----------------------------------------------------------------------


def _batches(key: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle, sort by bucket, cut into batches, shuffle the full batches' order; the one
    partial batch (if any) goes last, as in Keras (the store's batch arithmetic expects it)."""
    order = rng.permutation(len(key))
    order = order[np.argsort(key[order], kind="stable")]
    chunks = [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
    tail = [chunks.pop()] if chunks and len(chunks[-1]) < batch_size else []
    return [chunks[i] for i in rng.permutation(len(chunks))] + tail


def _length_batches(key: np.ndarray, batch: int) -> list[np.ndarray]:
    """Rows sorted by bucket, cut into batches; the one partial batch comes first and holds
    the shortest rows, so the all-pad rows that fill it up to ``batch`` cost least."""
    order = np.argsort(key, kind="stable")
    first = len(order) % batch
    return ([order[:first]] if first else []) + [order[i: i + batch]
                                                 for i in range(first, len(order), batch)]


# -- evaluation, prediction, training --------------------------------------------------------


def _evaluate(engine: _Engine, x: np.ndarray, y: np.ndarray, batch: int,
              callbacks=None) -> dict[str, float]:
    """Mean loss and accuracy with the fast forward pass, in length order."""
    key = engine.plan.bucket_steps(x)
    loss_sum = hits = 0.0
    seen = 0
    for b, rows in enumerate(_length_batches(key, batch)):
        args = engine.batch_args(x, y, rows, int(key[rows].max()), batch)
        if callbacks is not None:
            callbacks.on_test_batch_begin(b)
        ls, hs = engine.eval_step(*args)
        loss_sum += float(ls)
        hits += float(hs)
        seen += len(rows)
        if callbacks is not None:
            callbacks.on_test_batch_end(b, {"loss": loss_sum / seen, "accuracy": hits / seen})
    n = max(len(x), 1)
    return {"loss": loss_sum / n, "accuracy": hits / n}


def predicts(model, cfg: TrainConfig) -> bool:
    """Whether ``predict`` is exact for this model: its inference shares the padding prefix
    (dropout is then the identity), however it was trained."""
    return inference_plan(model, cfg.maxlen) is not None


def predict(model, cfg: TrainConfig, x: np.ndarray, batch: int | None = None) -> np.ndarray:
    """P(positive) for padded rows through the training engine (its exact fast forward
    pass, native kernels where they apply), in batches of similar length so the padding
    is skipped: the test-set evaluation of a fast run, or of a dropout model that trained
    with plain fit (``predicts``), ~8x quicker than model.predict.

    ``batch`` defaults to the training batch size: the XLA loops compile per batch shape
    and window, and training compiled those; with the native kernels 64, 128 and 256 rows
    take the same time (bench/eval_speed.py). Rows come back in their own order."""
    plan = make_plan(model, cfg.maxlen, training=False)
    engine = _engine_for(model, plan)
    x = np.asarray(x, np.int32)
    batch = int(batch or cfg.batch_size)
    key = plan.bucket_steps(x)
    labels = np.zeros(len(x), np.float32)
    out = np.empty(len(x), np.float32)
    for rows in _length_batches(key, batch):
        args = engine.batch_args(x, labels, rows, int(key[rows].max()), batch)
        out[rows] = np.asarray(engine.prob_step(*args))[: len(rows)]
    return out


def fit(model, cfg: TrainConfig, x_train: np.ndarray, y_train: np.ndarray,
        len_train: np.ndarray | None, val: tuple[np.ndarray, np.ndarray] | None,
        callbacks: list, initial_epoch: int = 0) -> Any:
    """Train ``model``'s own variables in fast exact mode, calling ``callbacks`` as
    ``model.fit`` would (Keras-3 running-mean batch logs, val_* at epoch end, and
    ``model.stop_training`` honoured after every batch). Returns the History.

    ``len_train`` (codes per review) is not needed: the steps each row needs are measured
    from the padded rows themselves, which is exact whatever the rows hold. Epochs run
    from ``initial_epoch`` to ``cfg.epochs``; each epoch's shuffle is seeded from
    (cfg.seed, epoch).
    """
    import keras

    plan = make_plan(model, cfg.maxlen, training=True)
    x_train = np.asarray(x_train, np.int32)
    y_train = np.asarray(y_train, np.float32).reshape(-1)
    if len_train is not None and len(len_train) != len(x_train):
        raise ValueError(f"len_train has {len(len_train)} rows for {len(x_train)} reviews")
    n, bs = len(x_train), int(cfg.batch_size)
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    engine = _engine_for(model, plan)
    key = plan.bucket_steps(x_train)
    cbs = callbacks if isinstance(callbacks, keras.callbacks.CallbackList) else \
        keras.callbacks.CallbackList(callbacks, add_history=True, model=model,
                                     epochs=cfg.epochs, steps=math.ceil(n / bs), verbose=0)
    model.stop_training = False
    cbs.on_train_begin()
    with _old_objects_frozen():
        training_logs = _fit_epochs(engine, cfg, x_train, y_train, key, val, cbs,
                                    initial_epoch)
    model.optimizer.finalize_variable_values(model.trainable_variables)
    cbs.on_train_end(logs=training_logs)
    return getattr(model, "history", None)


@contextlib.contextmanager
def _old_objects_frozen():
    """Python's cyclic GC spares the objects that exist before training while it runs.

    A training process holds ~300,000 objects (TensorFlow, Keras, the data), and the
    objects the batches allocate trigger full collections that walk them all, 0.3-0.4 s
    each, every epoch or two of 2,000 reviews (counted with gc.callbacks, 2026-11-30;
    perf put gc_collect_main at 6-14 % of a fast epoch's samples). gc.freeze() moves them
    to a permanent generation that collections skip; new garbage is still collected as
    usual, and unfreeze() hands the old objects back afterwards."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _fit_epochs(engine: _Engine, cfg: TrainConfig, x_train: np.ndarray, y_train: np.ndarray,
                key: np.ndarray, val, cbs, initial_epoch: int) -> dict[str, float] | None:
    """fit's epochs, from ``initial_epoch``; returns the last epoch's logs."""
    model, bs = engine.model, int(cfg.batch_size)
    data = engine.tf.constant(x_train), engine.tf.constant(y_train)  # once, for all epochs
    training_logs = None
    for epoch in range(initial_epoch, cfg.epochs):
        cbs.on_epoch_begin(epoch)
        epoch_logs = _train_epoch(engine, cfg, data, key, epoch, cbs)
        if val is not None and len(val[0]):
            cbs.on_test_begin()  # at the training batch size, as Keras; reuses the loops
            val_logs = _evaluate(engine, np.asarray(val[0], np.int32),
                                 np.asarray(val[1], np.float32).reshape(-1), bs, cbs)
            cbs.on_test_end(val_logs)
            epoch_logs.update({f"val_{k}": v for k, v in val_logs.items()})
        cbs.on_epoch_end(epoch, epoch_logs)
        training_logs = epoch_logs
        if model.stop_training:
            break
    return training_logs


def _train_epoch(engine: _Engine, cfg: TrainConfig, data: tuple, key: np.ndarray, epoch: int,
                 cbs) -> dict[str, float]:
    """One epoch's batches (shuffled by (cfg.seed, epoch)), stopping after the batch that
    set ``model.stop_training``; returns the epoch's loss and accuracy logs. ``data``: the
    training codes and labels as tensors; ``key``: each row's bucket (Plan.bucket_steps)."""
    bs = int(cfg.batch_size)
    loss_sum = hits = 0.0
    seen = 0
    rng = np.random.default_rng([cfg.seed, SHUFFLE_SALT, epoch])
    batches = _batches(key, bs, rng)
    order = engine.epoch_order(batches, bs)
    for b, rows in enumerate(batches):
        args = engine.epoch_args(data, order, b, len(rows), int(key[rows].max()))
        cbs.on_train_batch_begin(b)
        loss, hit = engine.train_rows(*args)
        seen += len(rows)
        loss_sum += float(loss) * len(rows)
        hits += float(hit)
        cbs.on_train_batch_end(b, {"loss": loss_sum / seen, "accuracy": hits / seen})
        if engine.model.stop_training:
            break
    return {"loss": loss_sum / max(seen, 1), "accuracy": hits / max(seen, 1)}


def batch_gradients(model, cfg: TrainConfig, x: np.ndarray, y: np.ndarray,
                    n_steps: int | None = None) -> tuple[np.ndarray, float, list[np.ndarray]]:
    """One batch through the compiled fast path, as a train step computes it before the
    optimizer update: (probabilities, mean BCE loss, gradient per trainable variable).

    ``n_steps`` (default: the fewest the batch allows) may be larger, for checking that the
    result does not depend on where the shared prefix ends. Dropout runs in inference mode.
    """
    plan = make_plan(model, cfg.maxlen, training=True)
    engine = _engine_for(model, plan)  # one compile per model and window, not per call
    x = np.asarray(x, np.int32)
    need = max(int(plan.steps_needed(x).max()), 1)
    n_steps = need if n_steps is None else int(n_steps)
    if not need <= n_steps <= plan.steps:
        raise ValueError(f"n_steps must be from {need} to {plan.steps}, got {n_steps}")
    p, loss, grads = engine.grad_step(*engine.batch_args(
        x, np.asarray(y, np.float32).reshape(-1), np.arange(len(x)), n_steps, len(x)))
    return np.asarray(p), float(loss), [np.asarray(g) for g in grads]
