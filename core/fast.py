"""Exact fast training and prediction that skip the shared padding prefix (issue 4).

With 'pre' padding every row is ``k`` pad codes followed by the review's own codes, and a
recurrent layer's state after ``k`` pad codes is the same for every review. So instead of
running all ``maxlen`` steps for every review:

- the shared prefix is computed once per batch, at batch size 1, from the model's own
  weights (with the gradient flowing through it into embedding row 0, the convolution and
  the recurrent weights);
- reviews are bucketed by length, and a batch whose longest review needs ``S`` steps starts
  the recurrence from the prefix state at step ``steps - S`` and runs only ``S`` steps.

This is the same function as the padded model: same outputs and the same gradients, up to
float32 rounding (tests/test_fast.py checks 1e-5). The saved model is the ordinary Keras
model; nothing here is stored in it.

What differs from ``model.fit`` is the batch composition (reviews of similar length train
together; batch order is shuffled per epoch) and, with Keras 3's sparse Adam/RMSprop,
the update of embedding row 0: those optimizers square each IndexedSlices slice on its
own, and plain fit has one slice per review and pad position where this has one per
shared prefix position.

Training runs as a TensorFlow graph with hand-written LSTM/GRU gradients. LSTM layers use
the native kernels of core/native.py where they build (one op per layer and direction:
input projection, time loop and weight gradients); otherwise, and for GRU, the time loops
are XLA-compiled and the input projection ``x @ W`` and weight gradients ``h^T dz`` are
single large TensorFlow matmuls around them. Both compute the same function (the tests
run both).

Prediction (:class:`FastPredictor`) precomputes the pad states for every prefix length
once, in numpy, and runs only each row's own tokens.
"""

from __future__ import annotations

import contextlib
import functools
import math
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core import native
from core.config import TrainConfig

# Bucket lengths (recurrent steps a batch runs) are rounded up to a multiple of this,
# so reviews of nearly the same length share batches across epochs' shuffles.
STEP_GRID = 16
# A batch runs its own steps inside a compiled window (the last W recurrent steps); one
# XLA compile per window size. The model's steps are cut into about this many windows:
# projections, buffers and the convolution scale with the window, not the batch's steps.
WINDOW_COUNT = 4
# ... each at least this many steps (fewer compiles for short models).
WINDOW_MIN = 64
# Each batch's rows run as this many independent time loops, concurrently on the cores.
LOOP_SPLIT = 2
# XLA-compile the recurrent time loops: per step far less overhead than TensorFlow's
# graph executor (one small compile per window size and layer).
JIT_COMPILE = True
# Salt mixed into cfg.seed for the bucket shuffle, so it differs from Keras's own streams.
SHUFFLE_SALT = 0x5EED

# Architectures where the padding prefix is shared and fast mode is exact.
EXACT = ("lstm", "gru", "stacked-lstm", "cnn-lstm")
# Architectures with dropout before the recurrence: exact only with dropout == 0.
DROPOUT_BEFORE_RECURRENCE = {
    "lstm-dropout": "Dropout on the embeddings",
    "cnn-lstm-dropout": "Dropout after the pooling",
}


def applies(cfg: TrainConfig) -> tuple[bool, str]:
    """(fast mode used, reason shown to the user)."""
    plain = "plain Keras fit on padded arrays"
    if not cfg.fast:
        return False, f"fast=false: {plain}"
    if cfg.clipnorm > 0:
        return False, (f"clipnorm={cfg.clipnorm:g}: Keras clips the embedding's gradient by "
                       "the norm of its slices (one per review and position, each squared on "
                       "its own); fast mode has one padding slice per shared prefix position, "
                       f"so the clipped steps would differ; {plain}")
    arch = cfg.architecture
    if arch in EXACT:
        return True, ("exact fast mode: each batch runs only its reviews' own steps from a "
                      "padding state computed once per batch (same outputs and gradients as "
                      f"the {cfg.maxlen}-step model)")
    if arch in DROPOUT_BEFORE_RECURRENCE:
        if cfg.dropout == 0:
            return True, (f"exact fast mode ({arch} with dropout 0: its dropout layers are "
                          "identities)")
        return False, (f"{arch}: {DROPOUT_BEFORE_RECURRENCE[arch]} draws a different mask at "
                       "every padding position of every review, so the padding prefix is not "
                       f"shared and skipping it would change training; {plain}")
    if arch == "bilstm":
        return False, ("bilstm: the backward LSTM reads the padding last, after each review's "
                       "own words, so its state there differs per review and cannot be "
                       f"shared; {plain}")
    return False, f"{arch}: no exact fast mode for this architecture; {plain}"


# -- the model's structure -------------------------------------------------------------------


@dataclass
class Plan:
    """A registry model read as: embedding -> [conv -> pool] -> recurrent layers -> head."""

    maxlen: int
    steps: int  # recurrent steps over a full padded row: maxlen, or maxlen // pool_size
    embedding: Any
    conv: Any = None
    pool_size: int = 1
    pad_left: int = 0  # Conv1D 'same' zero padding before position 0
    pad_right: int = 0  # ... and after position maxlen - 1
    recurrent: list = field(default_factory=list)  # [("lstm" | "gru", keras layer)]
    after: list = field(default_factory=list)  # layers between recurrence and head
    head: Any = None

    def window_positions(self, window: int) -> tuple[int, int]:
        """Code positions [q0, q1) the last ``window`` recurrent steps read (may stick out
        of [0, maxlen) by the convolution's zero padding)."""
        p = self.pool_size
        return (self.steps - window) * p - self.pad_left, self.steps * p + self.pad_right

    def steps_needed(self, x: np.ndarray) -> np.ndarray:
        """Per row, the recurrent steps that read anything but the shared padding prefix."""
        x = np.asarray(x)
        nonpad = x != 0
        lead = np.where(nonpad.any(axis=1), nonpad.argmax(axis=1), x.shape[1])
        # Step j is shared iff every code its pooled conv window reads is padding (or the
        # conv's zero padding, which every row has too).
        shared = np.maximum(lead - self.pad_right, 0) // self.pool_size
        shared = np.where(lead == x.shape[1], self.steps, np.minimum(shared, self.steps))
        return (self.steps - shared).astype(np.int64)

    def bucket_steps(self, x: np.ndarray) -> np.ndarray:
        """Per row, the steps its batch runs: steps_needed rounded up to STEP_GRID (rows
        of nearly equal length share buckets), at most the model's steps."""
        return np.minimum(_round_up(self.steps_needed(x), STEP_GRID), self.steps)

    def windows(self) -> list[int]:
        """The compiled window sizes, smallest first: 128, 256, 384, 500 for 500 steps,
        64, 128, 192, 250 for the CNN's 250."""
        quantum = max(WINDOW_MIN, _round_up(-(-self.steps // WINDOW_COUNT), STEP_GRID))
        return list(range(quantum, self.steps, quantum)) + [self.steps]

    def window_for(self, n_steps: int) -> int:
        return next(w for w in self.windows() if w >= n_steps)


def _act_name(fn) -> str:
    return getattr(fn, "__name__", str(fn))


def make_plan(model, maxlen: int | None = None, training: bool = True) -> Plan:
    """Read a registry model's structure; ValueError says what is not supported.

    ``training``: dropout before the recurrence is only an identity at inference, so it
    is refused for training unless its rate is 0.
    """
    from keras import layers

    maxlen = maxlen or int(model.inputs[0].shape[1])
    chain = [ly for ly in model.layers if not isinstance(ly, layers.InputLayer)]
    if not chain or not isinstance(chain[0], layers.Embedding):
        raise ValueError("the model does not start with an Embedding")
    emb = chain.pop(0)
    if getattr(emb, "mask_zero", False):
        raise ValueError("Embedding(mask_zero=True) is not supported")
    plan = Plan(maxlen=maxlen, steps=maxlen, embedding=emb)

    def skip_dropout(where: str) -> None:
        while chain and isinstance(chain[0], layers.Dropout):
            if training and chain[0].rate > 0:
                raise ValueError(f"Dropout {where} the recurrence draws a different mask per "
                                 "padding position, so the prefix is not shared")
            chain.pop(0)

    skip_dropout("before")
    if chain and isinstance(chain[0], layers.Conv1D):
        conv = chain.pop(0)
        if (conv.padding != "same" or tuple(conv.strides) != (1,)
                or tuple(conv.dilation_rate) != (1,) or conv.groups != 1
                or conv.data_format != "channels_last" or not conv.use_bias):
            raise ValueError("only Conv1D(padding='same', strides=1) is supported")
        if not chain or not isinstance(chain[0], layers.MaxPooling1D):
            raise ValueError("Conv1D must be followed by MaxPooling1D")
        pool = chain.pop(0)
        p = int(pool.pool_size[0])
        if int(pool.strides[0]) != p or pool.padding != "valid":
            raise ValueError("only MaxPooling1D(strides=pool_size, padding='valid')")
        k = int(conv.kernel_size[0])
        plan.conv, plan.pool_size = conv, p
        plan.pad_left = (k - 1) // 2  # TensorFlow's 'SAME': the extra pad goes at the end
        plan.pad_right = k - 1 - plan.pad_left
        plan.steps = maxlen // p
        if plan.steps < 1:
            raise ValueError("pool_size is longer than maxlen")
        skip_dropout("before")

    while chain and isinstance(chain[0], (layers.LSTM, layers.GRU)):
        rnn = chain.pop(0)
        kind = "lstm" if isinstance(rnn, layers.LSTM) else "gru"
        cell = rnn.cell
        if (rnn.go_backwards or rnn.stateful or cell.dropout or cell.recurrent_dropout
                or not cell.use_bias or _act_name(cell.activation) != "tanh"
                or _act_name(cell.recurrent_activation) != "sigmoid"
                or (kind == "gru" and not cell.reset_after)):
            raise ValueError(f"{rnn.name}: only forward, dropout-free, tanh/sigmoid "
                             "LSTM/GRU layers (GRU with reset_after) are supported")
        plan.recurrent.append((kind, rnn))
        if chain and isinstance(chain[0], (layers.LSTM, layers.GRU)) != rnn.return_sequences:
            raise ValueError(f"{rnn.name}: return_sequences must be set exactly on layers "
                             "that feed another recurrent layer")
    if not plan.recurrent:
        raise ValueError("no LSTM/GRU layer where expected (Bidirectional is not supported)")
    while chain and isinstance(chain[0], layers.Dropout):
        plan.after.append(chain.pop(0))  # dropout after the recurrence: any rate is exact
    if (len(chain) != 1 or not isinstance(chain[0], layers.Dense) or chain[0].units != 1
            or not chain[0].use_bias or _act_name(chain[0].activation) != "sigmoid"):
        raise ValueError("the model must end in Dense(1, activation='sigmoid')")
    plan.head = chain[0]
    return plan


def _round_up(n: np.ndarray | int, step: int):
    return -(-n // step) * step


# -- recurrences with hand-written gradients (TensorFlow) -------------------------------------


@functools.cache
def _recurrences(with_native: bool = False) -> dict[str, Any]:
    """LSTM/GRU layers as tf.custom_gradient functions, keyed by (kind, sequences); with
    ``with_native`` (only asked for when native.enabled()) also ("lstm-native", sequences),
    core/native's ops (see lstm_native).

    The XLA ones run steps [start, end) of time-major inputs ``xw`` (T, B, G) that already
    include the input projection and bias; rows outside [start, end) are ignored and get zero
    gradient. The candidate (tanh) blocks of ``xw`` and of the recurrent weights arrive
    scaled by 2, so one sigmoid covers every gate: tanh(a) = 2 * sigmoid(2a) - 1.

    Only the time loops are XLA-compiled (one small compile per (T, B) shape); the large
    matmuls around them (input projection, weight gradients ``h^T dz`` over all steps at
    once) run as ordinary TensorFlow ops.
    """
    import tensorflow as tf

    jit = functools.partial(tf.function, jit_compile=JIT_COMPILE, autograph=False)

    def inside(t_total, start, end):
        r = tf.range(t_total)
        return ((r >= start) & (r < end))[:, None, None]

    def stored(t_total, batch, width):
        return tf.TensorArray(tf.float32, size=t_total, element_shape=[batch, width])

    def rows_at(t, t_total, *arrays):
        """Step t's rows of time-major arrays (None stays None), t clamped into range.

        The loops carry the next step's rows as loop state, read here one step ahead:
        a dynamic slice fused into the elementwise gate math makes XLA's CPU code 2-3x
        slower than reading a carried, materialized block (measured on the backward
        loop: 90 vs 35 us per step at batch 32)."""
        t = tf.clip_by_value(t, 0, t_total - 1)
        # gather, not a[t]: XLA would take a strided slice's begin as a compile-time
        # constant here (start, end are arguments) and compile once per value.
        return tuple(None if a is None else tf.gather(a, t) for a in arrays)

    @jit
    def lstm_forward(xw, h0, c0, rk, start, end):
        """-> gate sigmoids (T, B, 4U), h and c before each step, final h and c."""
        t_total, batch, width = xw.shape

        def step(t, h, c, x_t, acts, hprev, cprev):
            s = tf.sigmoid(x_t + tf.matmul(h, rk))
            i, f, g, o = tf.split(s, 4, axis=1)
            c_new = f * c + i * (2.0 * g - 1.0)
            return (t + 1, o * tf.tanh(c_new), c_new, *rows_at(t + 1, t_total, xw),
                    acts.write(t, s), hprev.write(t, h), cprev.write(t, c))

        units = width // 4
        _, h, c, _, acts, hprev, cprev = tf.while_loop(
            lambda t, *_: t < end, step,
            (start, h0, c0, *rows_at(start, t_total, xw), stored(t_total, batch, width),
             stored(t_total, batch, units), stored(t_total, batch, units)))
        return acts.stack(), hprev.stack(), cprev.stack(), h, c

    @jit
    def lstm_backward(acts, cprev, dseq, dh, dc, rk, start, end):
        """-> dz (T, B, 4U) for the rows run, and the gradients of the initial h and c.
        ``dseq`` (gradient of the output sequence) is None for a last layer."""
        t_total, batch, width = acts.shape

        def back(t, dh, dc, a_t, cp, *rest):
            *ds_t, dz_all = rest
            if ds_t:
                dh = dh + ds_t[0]
            i, f, g, o = tf.split(a_t, 4, axis=1)
            g = 2.0 * g - 1.0  # stored as sigmoid(2a); the candidate is tanh(a) = 2s - 1
            tc = tf.tanh(f * cp + i * g)
            dc = dc + dh * o * (1.0 - tc * tc)
            dz = tf.concat([dc * g * i * (1.0 - i), dc * cp * f * (1.0 - f),
                            dc * i * (1.0 - g * g) * 0.5, dh * tc * o * (1.0 - o)], 1)
            ahead = [x for x in rows_at(t - 1, t_total, acts, cprev, dseq) if x is not None]
            return (t - 1, tf.matmul(dz, rk, transpose_b=True), dc * f, *ahead,
                    dz_all.write(t, dz))

        first = [x for x in rows_at(end - 1, t_total, acts, cprev, dseq) if x is not None]
        out = tf.while_loop(lambda t, *_: t >= start, back,
                            (end - 1, dh, dc, *first, stored(t_total, batch, width)))
        return out[-1].stack(), out[1], out[2]

    @jit
    def gru_forward(xw, h0, rk, brec, start, end):
        """-> [z, r, hh, mh] (T, B, 4U), h before each step, final h."""
        t_total, batch, width = xw.shape
        units = width // 3

        def step(t, h, x_t, gates, hprev):
            m = tf.matmul(h, rk) + brec
            xz, xr, xh = tf.split(x_t, 3, axis=1)
            mz, mr, mh = tf.split(m, 3, axis=1)
            z = tf.sigmoid(xz + mz)
            r = tf.sigmoid(xr + mr)
            hh = 2.0 * tf.sigmoid(xh + r * mh) - 1.0
            return (t + 1, z * h + (1.0 - z) * hh, *rows_at(t + 1, t_total, xw),
                    gates.write(t, tf.concat([z, r, hh, mh], 1)), hprev.write(t, h))

        _, h, _, gates, hprev = tf.while_loop(
            lambda t, *_: t < end, step,
            (start, h0, *rows_at(start, t_total, xw), stored(t_total, batch, 4 * units),
             stored(t_total, batch, units)))
        return gates.stack(), hprev.stack(), h

    @jit
    def gru_backward(gates, hprev, dseq, dh, rk, start, end):
        """-> [dz, dr, da, da * r] (T, B, 4U) (input-side grads are the first three,
        recurrent-side [dz, dr, da * r]) and the gradient of the initial h."""
        t_total, batch, width = gates.shape

        def back(t, dh, g_t, hp, *rest):
            *ds_t, d_all = rest
            if ds_t:
                dh = dh + ds_t[0]
            z, r, hh, mh = tf.split(g_t, 4, axis=1)
            da = dh * (1.0 - z) * (1.0 - hh * hh) * 0.5
            dzz = dh * (hp - hh) * z * (1.0 - z)
            dzr = da * mh * r * (1.0 - r)
            dm = tf.concat([dzz, dzr, da * r], 1)
            dh_prev = dh * z + tf.matmul(dm, rk, transpose_b=True)
            ahead = [x for x in rows_at(t - 1, t_total, gates, hprev, dseq) if x is not None]
            return (t - 1, dh_prev, *ahead,
                    d_all.write(t, tf.concat([dzz, dzr, da, da * r], 1)))

        first = [x for x in rows_at(end - 1, t_total, gates, hprev, dseq) if x is not None]
        out = tf.while_loop(lambda t, *_: t >= start, back,
                            (end - 1, dh, *first, stored(t_total, batch, width)))
        return out[-1].stack(), out[1]

    def outputs_of(hprev, h, start, end, rows_in):
        """h after each step [start, end): the layer's output sequence."""
        t_total = tf.shape(hprev)[0]
        after = tf.concat([hprev[1:], tf.zeros_like(hprev[:1])], 0)
        last = (tf.range(t_total) == end - 1)[:, None, None]
        return tf.where(rows_in, tf.where(last, h[None], after), 0.0)

    def zeros_or(x, like):
        return tf.zeros_like(like) if x is None else x

    def lstm(sequences: bool):
        @tf.custom_gradient
        def run(xw, h0, c0, rk, start, end):
            # Rows outside [start, end) are never written: zeros (TensorArray semantics).
            acts, hprev, cprev, h, c = lstm_forward(xw, h0, c0, rk, start, end)
            seq = (outputs_of(hprev, h, start, end, inside(xw.shape[0], start, end))
                   if sequences else tf.zeros([0]))

            def grad(dseq, dh, dc):
                dseq = zeros_or(dseq, hprev) if sequences else None
                dz, dh0, dc0 = lstm_backward(acts, cprev, dseq, zeros_or(dh, h),
                                             zeros_or(dc, c), rk, start, end)
                units = h0.shape[1]
                drk = tf.matmul(tf.reshape(hprev, [-1, units]),
                                tf.reshape(dz, [-1, 4 * units]), transpose_a=True)
                return dz, dh0, dc0, drk, None, None

            return (seq, h, c), grad

        return run

    def gru(sequences: bool):
        @tf.custom_gradient
        def run(xw, h0, rk, brec, start, end):
            gates, hprev, h = gru_forward(xw, h0, rk, brec, start, end)
            seq = (outputs_of(hprev, h, start, end, inside(xw.shape[0], start, end))
                   if sequences else tf.zeros([0]))

            def grad(dseq, dh):
                dseq = zeros_or(dseq, hprev) if sequences else None
                d_all, dh0 = gru_backward(gates, hprev, dseq, zeros_or(dh, h), rk, start, end)
                units = h0.shape[1]
                dzz, dzr, da, dar = tf.split(d_all, 4, axis=2)
                dx = tf.concat([dzz, dzr, da], 2)
                dm = tf.reshape(tf.concat([dzz, dzr, dar], 2), [-1, 3 * units])
                drk = tf.matmul(tf.reshape(hprev, [-1, units]), dm, transpose_a=True)
                return dx, dh0, drk, tf.reduce_sum(dm, axis=0), None, None

            return (seq, h), grad

        return run

    def lstm_native(sequences: bool, kernels):
        """The LSTM layer as core/native's ops: input projection, time loop and weight
        gradients in one op each way (a layer's inputs, not its projections)."""
        @tf.custom_gradient
        def run(feats, h0, c0, kernel, bias, rk, start, end):
            acts, hprev, cprev, h, c = kernels.lab_lstm_forward(feats, h0, c0, kernel, bias,
                                                                rk, start, end)
            seq = (outputs_of(hprev, h, start, end, inside(tf.shape(feats)[0], start, end))
                   if sequences else tf.zeros([0]))

            def grad(dseq, dh, dc):
                dseq = zeros_or(dseq, hprev) if sequences else tf.zeros([0])
                grads = kernels.lab_lstm_backward(feats, acts, hprev, cprev, dseq,
                                                  zeros_or(dh, h), zeros_or(dc, c), kernel,
                                                  rk, start, end)
                return (*grads, None, None)  # d(feats, h0, c0, kernel, bias, rk); no start/end

            return (seq, h, c), grad

        return run

    runs = {("lstm", s): lstm(s) for s in (False, True)} | {
        ("gru", s): gru(s) for s in (False, True)}
    if with_native:
        runs |= {("lstm-native", s): lstm_native(s, native.ops()[0]) for s in (False, True)}
    return runs


def _candidate_scale(kind: str, units: int) -> np.ndarray:
    """Per-column factor: 2 on the tanh (candidate) block, 1 on the sigmoid gates."""
    blocks = [1, 1, 2, 1] if kind == "lstm" else [1, 1, 2]
    return np.repeat(np.asarray(blocks, np.float32), units)


# -- the fast forward pass and train step (TensorFlow) ----------------------------------------


class _Engine:
    """Graph-compiled train/eval steps for one model.

    With the native LSTM kernels (core/native.py) a batch's window is exactly its own
    steps, passed as a tensor: one trace serves every length. The XLA loops compile once
    per window size instead, so there windows are the few sizes of Plan.windows (one
    trace each) and a batch runs its steps inside the smallest that fits."""

    def __init__(self, model, plan: Plan):
        import tensorflow as tf

        self.tf, self.model, self.plan = tf, model, plan
        self.optimizer = getattr(model, "optimizer", None)  # None: not compiled
        self.native = native.enabled() and all(kind == "lstm" for kind, _ in plan.recurrent)
        self.runs = _recurrences(self.native)
        self.train_step = self._compiled(self._train_step)
        self.eval_step = self._compiled(self._eval_step)
        self.grad_step = self._compiled(self._grad_step)
        self.prob_step = self._compiled(self._prob_step)

    def _compiled(self, fn):
        """``fn`` as a tf.function: traced per window (XLA loops) or, native, once per
        batch size with the codes' length and the window left open."""
        tf = self.tf
        if not self.native:
            return tf.function(fn)
        traced: dict[int, Any] = {}

        def call(codes, y, w, n_steps, window):
            batch = len(codes)
            if batch not in traced:
                spec = tf.TensorSpec
                traced[batch] = tf.function(fn, input_signature=[
                    spec([batch, None], tf.int32), spec([batch], tf.float32),
                    spec([batch], tf.float32), spec([], tf.int32), spec([], tf.int32)])
            return traced[batch](codes, y, w, n_steps, window)

        return call

    # Features: embeddings, or conv + pool, time-major (T, B, F).
    def _features(self, codes, pad_left: int, pad_right: int):
        tf, plan = self.tf, self.plan
        e = tf.gather(plan.embedding.embeddings, codes)  # (B, L, E)
        if plan.conv is None:
            return tf.transpose(e, [1, 0, 2])
        conv = plan.conv
        e = tf.pad(e, [[0, 0], [pad_left, pad_right], [0, 0]])  # 'same' zero padding
        if e.shape[0] == 1:  # a single row (the padding row): one matmul per tap, as a
            n_conv = e.shape[1] - conv.kernel.shape[0] + 1  # batch-1 conv's gradient is slow
            y = conv.bias + sum(tf.matmul(e[0, j: j + n_conv], conv.kernel[j])
                                for j in range(conv.kernel.shape[0]))[None]
        else:
            y = tf.nn.conv1d(e, conv.kernel, stride=1, padding="VALID") + conv.bias
        y = conv.activation(y)
        # As Keras's MaxPooling1D (the same op, so the same gradient routing on ties); VALID
        # drops a last partial window.
        y = tf.nn.max_pool1d(y, plan.pool_size, plan.pool_size, "VALID")
        return tf.transpose(y, [1, 0, 2])

    def _recur(self, kind: str, layer, feats, state, start, end, sequences: bool):
        """Steps [start, end) of one layer over time-major feats; returns (seq, state).

        A batch is split into LOOP_SPLIT independent time loops (rows don't interact in
        a recurrence), which TensorFlow runs concurrently on the CPU's cores. The split
        is made on the narrow features, before the input projection, and the candidate
        scale is folded into the small weight matrices: no pass over the wide (T, B, G)
        projections beyond the matmul that makes them (and its gradient)."""
        tf = self.tf
        cell = layer.cell
        scale = tf.constant(_candidate_scale(kind, cell.units))
        kernel = cell.kernel * scale
        b_in = (cell.bias if kind == "lstm" else cell.bias[0]) * scale
        rk = cell.recurrent_kernel * scale
        t_total, batch = feats.shape[0], feats.shape[1]
        state = [tf.broadcast_to(s, [batch, cell.units]) for s in state]
        parts = LOOP_SPLIT if batch % LOOP_SPLIT == 0 and batch >= 2 * LOOP_SPLIT else 1
        outs = []
        for feats_p, *state_p in zip(*(tf.split(a, parts, axis=a.shape.rank - 2)
                                       for a in [feats, *state])):
            if kind == "lstm" and self.native:  # projections are inside the native ops
                outs.append(self.runs[("lstm-native", sequences)](feats_p, *state_p, kernel,
                                                                  b_in, rk, start, end))
                continue
            rows = feats_p.shape[1]
            flat = tf.reshape(feats_p, [-1, feats_p.shape[2]])
            xw = tf.reshape(tf.matmul(flat, kernel) + b_in, [t_total, rows, -1])
            if kind == "lstm":
                outs.append(self.runs[("lstm", sequences)](xw, *state_p, rk, start, end))
            else:
                outs.append(self.runs[("gru", sequences)](xw, *state_p, rk,
                                                          cell.bias[1] * scale, start, end))
        if parts == 1:
            seq, *last = outs[0]
        else:
            seq = tf.concat([o[0] for o in outs], axis=1) if sequences else outs[0][0]
            last = [tf.concat(list(a), axis=0) for a in zip(*(o[1:] for o in outs))]
        return seq, tuple(last)

    def logits(self, codes, n_steps, window, training: bool):
        """Logits for the codes of the last ``window`` steps' positions (B, columns), the
        longest row needing ``n_steps`` steps; n_steps is a tensor, window a static int
        (XLA loops: one compile each) or, with the native kernels, a tensor."""
        tf, plan = self.tf, self.plan
        q0, q1 = plan.window_positions(window)
        left = tf.maximum(0, -q0) if tf.is_tensor(q0) else max(0, -q0)
        # The shared prefix: an all-padding row, run for steps [0, steps - n_steps).
        n_prefix = plan.steps - n_steps
        pad_feats = self._features(tf.zeros([1, plan.maxlen], tf.int32),
                                   plan.pad_left, plan.pad_right)[: plan.steps]
        feats = self._features(codes, left, max(0, q1 - plan.maxlen))
        start = window - n_steps
        for li, (kind, layer) in enumerate(plan.recurrent):
            sequences = li + 1 < len(plan.recurrent)
            zeros = [tf.zeros([1, layer.cell.units])] * (2 if kind == "lstm" else 1)
            pad_feats, state = self._recur(kind, layer, pad_feats, zeros, 0, n_prefix,
                                           sequences)
            feats, last = self._recur(kind, layer, feats, state, start, window, sequences)
        h = last[0]
        for layer in plan.after:
            h = layer(h, training=training)
        head = plan.head
        return (tf.matmul(h, head.kernel) + head.bias)[:, 0]

    def _losses(self, codes, y, w, n_steps, window, training: bool):
        tf = self.tf
        logits = self.logits(codes, n_steps, window, training)
        per = tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=logits)
        hit = tf.cast(tf.cast(tf.sigmoid(logits) > 0.5, tf.float32) == y, tf.float32)
        return tf.reduce_sum(per * w), tf.reduce_sum(hit * w)

    def _train_step(self, codes, y, w, n_steps, window):
        tf, model = self.tf, self.model
        variables = model.trainable_variables
        with tf.GradientTape() as tape:
            loss_sum, hits = self._losses(codes, y, w, n_steps, window, training=True)
            loss = loss_sum / tf.reduce_sum(w)  # Keras: mean over the batch's reviews
        grads = tape.gradient(loss, variables)
        model.optimizer.apply(grads, variables)
        return loss, hits

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
        n_steps = max(n_steps, 1)  # an all-padding batch still runs its last step
        window = n_steps if self.native else self.plan.window_for(n_steps)
        q0, q1 = self.plan.window_positions(window)
        codes = np.zeros((batch, min(q1, self.plan.maxlen) - max(q0, 0)), np.int32)
        codes[: len(rows)] = x[rows, max(q0, 0): min(q1, self.plan.maxlen)]
        labels = np.zeros(batch, np.float32)
        labels[: len(rows)] = y[rows]
        weights = np.zeros(batch, np.float32)
        weights[: len(rows)] = 1.0
        tf = self.tf
        return (codes, labels, weights, tf.constant(n_steps, tf.int32),
                tf.constant(window, tf.int32) if self.native else window)


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


def predict(model, cfg: TrainConfig, x: np.ndarray, batch: int | None = None) -> np.ndarray:
    """P(positive) for padded rows through the training engine (its exact fast forward
    pass, native kernels where they apply), in batches of similar length so the padding
    is skipped: the test-set evaluation of a fast run, ~8x quicker than model.predict.

    ``batch`` defaults to the training batch size: the XLA loops compile per batch shape
    and window, and training compiled those; with the native kernels 64, 128 and 256 rows
    take the same time (bench/eval_speed.py). Rows come back in their own order."""
    plan = make_plan(model, cfg.maxlen, training=True)
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


# Training engines per model (see _engine_for).
_ENGINES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _engine_for(model, plan: Plan) -> _Engine:
    """The model's engine, reused across fit calls while its optimizer is the same (as
    Keras keeps its train function), so epochs run as separate calls compile once."""
    engine = _ENGINES.get(model)
    if engine is None or engine.optimizer is not getattr(model, "optimizer", None):
        engine = _ENGINES[model] = _Engine(model, plan)
    return engine


def loops(model, cfg: TrainConfig) -> str:
    """Which recurrence code fast training runs for this model, for the run's record."""
    if _engine_for(model, make_plan(model, cfg.maxlen, training=True)).native \
            or not native.enabled():
        return native.status()  # the kernels, or why the XLA loops
    return "XLA-compiled loops (GRU layers have no native kernel)"


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
    steps = math.ceil(n / bs)

    cbs = callbacks if isinstance(callbacks, keras.callbacks.CallbackList) else \
        keras.callbacks.CallbackList(callbacks, add_history=True, model=model,
                                     epochs=cfg.epochs, steps=steps, verbose=0)
    model.stop_training = False
    cbs.on_train_begin()
    training_logs = None
    for epoch in range(initial_epoch, cfg.epochs):
        cbs.on_epoch_begin(epoch)
        loss_sum = hits = 0.0
        seen = 0
        rng = np.random.default_rng([cfg.seed, SHUFFLE_SALT, epoch])
        for b, rows in enumerate(_batches(key, bs, rng)):
            args = engine.batch_args(x_train, y_train, rows, int(key[rows].max()), bs)
            cbs.on_train_batch_begin(b)
            loss, hit = engine.train_step(*args)
            seen += len(rows)
            loss_sum += float(loss) * len(rows)
            hits += float(hit)
            cbs.on_train_batch_end(b, {"loss": loss_sum / seen, "accuracy": hits / seen})
            if model.stop_training:
                break
        epoch_logs = {"loss": loss_sum / max(seen, 1), "accuracy": hits / max(seen, 1)}
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
    model.optimizer.finalize_variable_values(model.trainable_variables)
    cbs.on_train_end(logs=training_logs)
    return getattr(model, "history", None)


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


# -- prediction (numpy) -----------------------------------------------------------------------


@functools.cache
def _openblas_threads() -> tuple[Any, Any] | None:
    """(get, set) for the thread count of numpy's bundled OpenBLAS, or None."""
    import ctypes
    import glob
    import os

    libs = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs", "*openblas*")
    for path in glob.glob(libs):
        try:
            lib = ctypes.CDLL(path)  # the copy numpy already loaded
        except OSError:
            continue
        for name in ("scipy_openblas_{}_num_threads64_", "openblas_{}_num_threads64_",
                     "openblas_{}_num_threads"):
            get = getattr(lib, name.format("get"), None)
            put = getattr(lib, name.format("set"), None)
            if get is not None and put is not None:
                return get, put
    return None


@contextlib.contextmanager
def _one_blas_thread():
    """Single-threaded BLAS for the per-step matmuls: next to TensorFlow's thread pools
    OpenBLAS's spinning worker threads make a small matmul 50x slower on few cores."""
    blas = _openblas_threads()
    if blas is None:
        yield
        return
    get, put = blas
    before = get()
    put(1)
    try:
        yield
    finally:
        put(before)


# The predictor computes every step's input projection in one go up to this many bytes
# (a typed review), else step by step (large batches such as attribution's).
PROJECT_ALL_BYTES = 8 << 20
# Predictor weight layout: LSTM gate columns reordered to [i, f, o, g] (GRU stays [z, r, h])
# and the sigmoid-gate columns scaled by 1/2 (exact), so one tanh serves every gate:
# sigmoid(x) = 0.5 * tanh(x / 2) + 0.5.
LSTM_ORDER = (0, 1, 3, 2)


def _predictor_weights(kind: str, w) -> np.ndarray:
    """Reorder/scale the last axis of a Keras LSTM/GRU kernel or bias for _Layer."""
    w = np.asarray(w, np.float32)
    blocks = np.split(w, 4 if kind == "lstm" else 3, axis=-1)
    if kind == "lstm":
        blocks = [blocks[j] for j in LSTM_ORDER]
    n_sigmoid = 3 if kind == "lstm" else 2
    return np.concatenate([b * 0.5 if j < n_sigmoid else b for j, b in enumerate(blocks)], -1)


@dataclass
class _Layer:
    """One recurrent layer's numpy weights (see _predictor_weights) and pad states."""

    kind: str
    units: int
    kernel: np.ndarray
    bias: np.ndarray  # input-side bias (LSTM: the bias; GRU: input bias)
    rk: np.ndarray
    brec: np.ndarray | None  # GRU recurrent bias
    pad_h: np.ndarray = None  # (steps + 1, units): state after k pad steps
    pad_c: np.ndarray = None
    table: np.ndarray | None = None  # first layer without conv: embedding @ kernel + bias

    def stepper(self, h: np.ndarray, c: np.ndarray | None, z: np.ndarray, m: np.ndarray):
        """A function ``step(xw)`` advancing rows h (and c) in place by one step; its
        views of the scratch rows z, m are made once (Python overhead dominates at n=1)."""
        u, rk = self.units, self.rk
        add, mul, tanh = np.add, np.multiply, np.tanh
        if self.kind == "lstm":
            gates = z[:, : 3 * u]
            i, f, o, g = (z[:, j * u: (j + 1) * u] for j in range(4))

            def step(xw: np.ndarray) -> None:
                np.matmul(h, rk, out=z)
                add(z, xw, out=z)
                tanh(z, out=z)
                mul(gates, 0.5, out=gates)  # sigmoid(x) = 0.5 * tanh(x / 2) + 0.5
                add(gates, 0.5, out=gates)
                mul(c, f, out=c)  # c = f * c + i * g
                mul(i, g, out=i)
                add(c, i, out=c)
                tanh(c, out=h)  # h = o * tanh(c)
                mul(h, o, out=h)

            return step
        brec, zr, hh = self.brec, z[:, : 2 * u], z[:, 2 * u: 3 * u]
        upd, r, m_zr, m_h = z[:, :u], z[:, u: 2 * u], m[:, : 2 * u], m[:, 2 * u:]

        def step(xw: np.ndarray) -> None:
            np.matmul(h, rk, out=m)
            add(m, brec, out=m)
            add(xw[:, : 2 * u], m_zr, out=zr)
            tanh(zr, out=zr)
            mul(zr, 0.5, out=zr)
            add(zr, 0.5, out=zr)
            mul(r, m_h, out=hh)  # hh = tanh(x_h + r * (h @ U_h + b_h))
            add(hh, xw[:, 2 * u:], out=hh)
            tanh(hh, out=hh)
            np.subtract(h, hh, out=h)  # h = z * h + (1 - z) * hh = hh + z * (h - hh)
            mul(h, upd, out=h)
            add(h, hh, out=h)

        return step


class FastPredictor:
    """P(positive) for padded rows, running only each row's own tokens (numpy).

    Built once per loaded model: the states after k padding codes, for every k, come from
    the model's weights; predict_padded then starts each row from its own prefix state.
    Dropout layers are identities at inference, so dropout models are exact here too.
    """

    def __init__(self, plan: Plan):
        self.plan = plan
        self.maxlen, self.steps = plan.maxlen, plan.steps
        emb = np.asarray(plan.embedding.embeddings, np.float32)
        self.layers: list[_Layer] = []
        for kind, layer in plan.recurrent:
            cell = layer.cell
            bias = np.asarray(cell.bias, np.float32)
            b_in, b_rec = (bias, None) if kind == "lstm" else (bias[0], bias[1])
            self.layers.append(_Layer(
                kind, cell.units, _predictor_weights(kind, cell.kernel),
                _predictor_weights(kind, b_in), _predictor_weights(kind, cell.recurrent_kernel),
                None if b_rec is None else _predictor_weights(kind, b_rec)))
        self.head_w = np.asarray(plan.head.kernel, np.float32)[:, 0]
        self.head_b = float(np.asarray(plan.head.bias, np.float32)[0])
        if plan.conv is None:
            first = self.layers[0]
            first.table = emb @ first.kernel + first.bias  # input projection per code
        else:
            k = np.asarray(plan.conv.kernel, np.float32)  # (kernel, E, F)
            # Per tap, each code's contribution; a final zero row stands for 'same' padding.
            self.taps = np.stack([np.vstack([emb @ k[j], np.zeros((1, k.shape[2]), np.float32)])
                                  for j in range(k.shape[0])])
            self.conv_bias = np.asarray(plan.conv.bias, np.float32)
            self.conv_act = plan.conv.activation
        with _one_blas_thread(), np.errstate(over="ignore"):
            self._pad_states()

    @classmethod
    def try_build(cls, model, cfg: TrainConfig | None = None) -> FastPredictor | None:
        """The fast predictor, or None when the model's structure has no shared prefix."""
        try:
            plan = make_plan(model, cfg.maxlen if cfg else None, training=False)
        except (ValueError, AttributeError, TypeError):
            return None
        return cls(plan)

    def _features(self, codes: np.ndarray, first: int) -> np.ndarray:
        """Inputs of the first recurrent layer at steps [first, steps), time-major: without
        conv the codes (T, n) (projected per step through the table), with conv the
        pooled features (T, n, F)."""
        plan = self.plan
        if plan.conv is None:
            return np.ascontiguousarray(codes[:, first:].T)
        p, k = plan.pool_size, self.taps.shape[0]
        if first >= plan.steps:  # every row is all shared prefix
            return np.zeros((0, len(codes), self.taps.shape[2]), np.float32)
        q0, q1 = first * p - plan.pad_left, plan.steps * p + plan.pad_right
        pos = np.arange(q0, q1)
        zero_row = self.taps.shape[1] - 1
        inside = (pos >= 0) & (pos < self.maxlen)
        cols = np.where(inside, codes[:, np.clip(pos, 0, self.maxlen - 1)], zero_row)
        n_conv = (plan.steps - first) * p
        y = sum(self.taps[j][cols[:, j: j + n_conv]] for j in range(k)) + self.conv_bias
        y = np.asarray(self.conv_act(y), np.float32)
        y = y.reshape(len(codes), plan.steps - first, p, -1).max(axis=2)
        return np.ascontiguousarray(y.transpose(1, 0, 2))

    def _xw(self, li: int, src: np.ndarray, t: int, out: np.ndarray) -> None:
        """Layer li's input projection at step t into ``out`` (its first rows)."""
        layer, a = self.layers[li], len(out)
        if src.ndim == 2:  # codes: one table row per code
            np.take(layer.table, src[t, :a], axis=0, out=out)
        else:
            np.matmul(src[t, :a], layer.kernel, out=out)
            out += layer.bias

    def _run(self, src: np.ndarray, starts: np.ndarray, first: int, init: list[tuple],
             record: bool = False) -> tuple[np.ndarray, list[tuple]]:
        """Run rows sorted by ``starts`` (the step each begins at) ascending from their
        states ``init`` (per layer: h, c) to the last step. Returns the top layer's final
        h (n, units) and, with ``record``, per layer the states after each step from
        ``first`` on: (h, c) arrays (steps - first + 1, n, units)."""
        n, n_steps = len(starts), self.steps - first
        # active[t]: how many rows are already running at step first + t.
        active = np.searchsorted(starts, np.arange(first, self.steps), side="right")
        h, history = None, []
        for li, layer in enumerate(self.layers):
            h, c = (None if a is None else a.copy() for a in init[li])
            width = layer.rk.shape[1]
            xw, z, m = (np.empty((n, width), np.float32) for _ in range(3))
            # The next layer reads a row's outputs only from the row's own start on.
            seq = np.zeros((n_steps, n, layer.units), np.float32) \
                if li + 1 < len(self.layers) else None
            if record:
                hist_h = np.empty((n_steps + 1, n, layer.units), np.float32)
                hist_c = np.empty_like(hist_h) if c is not None else None
                hist_h[0] = h
                if c is not None:
                    hist_c[0] = c
            # All steps' input projections at once when they fit in PROJECT_ALL_BYTES.
            every = None
            if n_steps * n * width * 4 <= PROJECT_ALL_BYTES:
                every = layer.table[src] if src.ndim == 2 else src @ layer.kernel + layer.bias
            steppers: dict[int, tuple] = {}  # per number of running rows: views made once
            for t in range(n_steps):
                a = int(active[t])
                if a not in steppers:
                    steppers[a] = (xw[:a], layer.stepper(h[:a], None if c is None else c[:a],
                                                         z[:a], m[:a]))
                xw_a, step = steppers[a]
                if every is None:
                    self._xw(li, src, t, xw_a)
                    step(xw_a)
                else:
                    step(every[t, :a])
                if seq is not None:
                    seq[t, :a] = h[:a]
                if record:
                    hist_h[t + 1] = h
                    if c is not None:
                        hist_c[t + 1] = c
            if record:
                history.append((hist_h, hist_c))
            src = seq
        return h, history

    def _pad_init(self, shared: np.ndarray) -> list[tuple]:
        """Per layer, the padding states after ``shared`` steps, one row per entry."""
        return [(layer.pad_h[shared], layer.pad_c[shared] if layer.kind == "lstm" else None)
                for layer in self.layers]

    def _pad_states(self) -> None:
        """States after k = 0..steps padding steps, per layer, at batch size 1."""
        src = self._features(np.zeros((1, self.maxlen), np.int64), 0)
        for li, layer in enumerate(self.layers):
            width = layer.rk.shape[1]
            h = np.zeros((1, layer.units), np.float32)
            c = np.zeros((1, layer.units), np.float32) if layer.kind == "lstm" else None
            xw, z, m = (np.empty((1, width), np.float32) for _ in range(3))
            hs = np.zeros((self.steps + 1, layer.units), np.float32)
            cs = np.zeros_like(hs)
            step = layer.stepper(h, c, z, m)
            for t in range(self.steps):
                self._xw(li, src, t, xw)
                step(xw)
                hs[t + 1] = h[0]
                if c is not None:
                    cs[t + 1] = c[0]
            layer.pad_h, layer.pad_c = hs, cs
            src = hs[1:, None, :]

    def _steps_equal_to(self, x: np.ndarray, ref: np.ndarray) -> np.ndarray:
        """Per row, how many leading recurrent steps read exactly what ``ref``'s do."""
        differs = x != ref
        col = np.where(differs.any(axis=1), differs.argmax(axis=1), self.maxlen)
        same = np.maximum(col - self.plan.pad_right, 0) // self.plan.pool_size
        return np.where(col == self.maxlen, self.steps, np.minimum(same, self.steps))

    def predict_padded(self, x: np.ndarray) -> np.ndarray:
        """P(positive) for int rows (n, maxlen) padded 'pre', as model.predict gives.

        Each row starts from the padding state after its shared prefix. Rows that also
        begin like the first row (occlusion variants of one review differ from it at one
        word) start from the first row's state where they part: it is run first.
        """
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.maxlen:
            raise ValueError(f"expected rows of {self.maxlen} codes, got shape {x.shape}")
        if len(x) == 0:
            return np.zeros(0, np.float32)
        shared = self.steps - self.plan.steps_needed(x)  # padding prefix steps per row
        out = np.empty(len(x), np.float32)
        with _one_blas_thread(), np.errstate(over="ignore"):
            init = self._pad_init(shared)
            starts = shared
            if len(x) > 2:
                same = self._steps_equal_to(x, x[0])
                reuse = same > shared  # begins like row 0 beyond the padding
                reuse[0] = False
                if reuse.any():
                    first0 = int(shared[0])
                    _, hist = self._run(self._features(x[:1], first0), shared[:1], first0,
                                        self._pad_init(shared[:1]), record=True)
                    init = [(np.where(reuse[:, None], _at(hh, same, first0), h0),
                             None if c0 is None else
                             np.where(reuse[:, None], _at(hc, same, first0), c0))
                            for (hh, hc), (h0, c0) in zip(hist, init)]
                    starts = np.where(reuse, same, shared)
            order = np.argsort(starts, kind="stable")  # running rows are always a prefix
            first = int(starts[order[0]])
            h, _ = self._run(self._features(x[order], first), starts[order], first,
                             [(h0[order], None if c0 is None else c0[order])
                              for h0, c0 in init])
            logit = h @ self.head_w + self.head_b
            out[order] = 1.0 / (1.0 + np.exp(-logit))
        return out


def _at(history: np.ndarray, steps: np.ndarray, first: int) -> np.ndarray:
    """Row 0's recorded state after ``steps`` steps (history starts at step ``first``),
    clipped into range for the rows that do not use it."""
    return history[np.clip(steps - first, 0, len(history) - 1), 0]
