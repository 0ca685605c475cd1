"""LSTM/GRU layers as tf.custom_gradient functions with hand-written gradients.

This module imports TensorFlow: the engine imports it when it is built (the web server
never does).

The XLA ones run steps [start, end) of time-major inputs ``xw`` (T, B, G) that already
include the input projection and bias; rows outside [start, end) are ignored and get zero
gradient. The candidate (tanh) blocks of ``xw`` and of the recurrent weights arrive
scaled by 2, so one sigmoid covers every gate: tanh(a) = 2 * sigmoid(2a) - 1.

Only the time loops are XLA-compiled (one small compile per (T, B) shape); the large
matmuls around them (input projection, weight gradients ``h^T dz`` over all steps at
once) run as ordinary TensorFlow ops. The native LSTM (core/native's ops) does input
projection, time loop and weight gradients in one op each way.
"""

from __future__ import annotations

import functools
from typing import Any

import tensorflow as tf

from core import native

# XLA-compile the recurrent time loops: per step far less overhead than TensorFlow's
# graph executor (one small compile per window size and layer).
JIT_COMPILE = True


@functools.cache
def recurrences(with_native: bool = False) -> dict[str, Any]:
    """The layers keyed by (kind, sequences); with ``with_native`` (only asked for when
    native.enabled()) also ("lstm-native", sequences), core/native's ops."""
    loops = _compiled_loops()
    runs = {("lstm", s): _lstm_layer(loops, s) for s in (False, True)} | {
        ("gru", s): _gru_layer(loops, s) for s in (False, True)}
    if with_native:
        runs |= {("lstm-native", s): _lstm_native_layer(native.ops()[0], s)
                 for s in (False, True)}
        runs["conv-pool-native"] = _conv_pool_native(native.ops()[0])
    return runs


def _compiled_loops() -> dict[str, Any]:
    """The four time loops, each a fresh XLA-compiled tf.function."""
    jit = functools.partial(tf.function, jit_compile=JIT_COMPILE, autograph=False)
    return {"lstm_forward": jit(_lstm_forward), "lstm_backward": jit(_lstm_backward),
            "gru_forward": jit(_gru_forward), "gru_backward": jit(_gru_backward)}


# -- helpers of the loops --------------------------------------------------------------------


def _inside(t_total, start, end):
    r = tf.range(t_total)
    return ((r >= start) & (r < end))[:, None, None]


def _stored(t_total, batch, width):
    return tf.TensorArray(tf.float32, size=t_total, element_shape=[batch, width])


def _rows_at(t, t_total, *arrays):
    """Step t's rows of time-major arrays (None stays None), t clamped into range.

    The loops carry the next step's rows as loop state, read here one step ahead:
    a dynamic slice fused into the elementwise gate math makes XLA's CPU code 2-3x
    slower than reading a carried, materialized block (measured on the backward
    loop: 90 vs 35 us per step at batch 32)."""
    t = tf.clip_by_value(t, 0, t_total - 1)
    # gather, not a[t]: XLA would take a strided slice's begin as a compile-time
    # constant here (start, end are arguments) and compile once per value.
    return tuple(None if a is None else tf.gather(a, t) for a in arrays)


def _outputs_of(hprev, h, start, end, rows_in):
    """h after each step [start, end): the layer's output sequence."""
    t_total = tf.shape(hprev)[0]
    after = tf.concat([hprev[1:], tf.zeros_like(hprev[:1])], 0)
    last = (tf.range(t_total) == end - 1)[:, None, None]
    return tf.where(rows_in, tf.where(last, h[None], after), 0.0)


def _zeros_or(x, like):
    return tf.zeros_like(like) if x is None else x


# -- the time loops (XLA-compiled by _compiled_loops) ----------------------------------------


def _lstm_forward(xw, h0, c0, rk, start, end):
    """-> gate sigmoids (T, B, 4U), h and c before each step, final h and c."""
    t_total, batch, width = xw.shape

    def step(t, h, c, x_t, acts, hprev, cprev):
        s = tf.sigmoid(x_t + tf.matmul(h, rk))
        i, f, g, o = tf.split(s, 4, axis=1)
        c_new = f * c + i * (2.0 * g - 1.0)
        return (t + 1, o * tf.tanh(c_new), c_new, *_rows_at(t + 1, t_total, xw),
                acts.write(t, s), hprev.write(t, h), cprev.write(t, c))

    units = width // 4
    _, h, c, _, acts, hprev, cprev = tf.while_loop(
        lambda t, *_: t < end, step,
        (start, h0, c0, *_rows_at(start, t_total, xw), _stored(t_total, batch, width),
         _stored(t_total, batch, units), _stored(t_total, batch, units)))
    return acts.stack(), hprev.stack(), cprev.stack(), h, c


def _lstm_backward(acts, cprev, dseq, dh, dc, rk, start, end):
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
        ahead = [x for x in _rows_at(t - 1, t_total, acts, cprev, dseq) if x is not None]
        return (t - 1, tf.matmul(dz, rk, transpose_b=True), dc * f, *ahead,
                dz_all.write(t, dz))

    first = [x for x in _rows_at(end - 1, t_total, acts, cprev, dseq) if x is not None]
    out = tf.while_loop(lambda t, *_: t >= start, back,
                        (end - 1, dh, dc, *first, _stored(t_total, batch, width)))
    return out[-1].stack(), out[1], out[2]


def _gru_forward(xw, h0, rk, brec, start, end):
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
        return (t + 1, z * h + (1.0 - z) * hh, *_rows_at(t + 1, t_total, xw),
                gates.write(t, tf.concat([z, r, hh, mh], 1)), hprev.write(t, h))

    _, h, _, gates, hprev = tf.while_loop(
        lambda t, *_: t < end, step,
        (start, h0, *_rows_at(start, t_total, xw), _stored(t_total, batch, 4 * units),
         _stored(t_total, batch, units)))
    return gates.stack(), hprev.stack(), h


def _gru_backward(gates, hprev, dseq, dh, rk, start, end):
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
        ahead = [x for x in _rows_at(t - 1, t_total, gates, hprev, dseq) if x is not None]
        return (t - 1, dh_prev, *ahead,
                d_all.write(t, tf.concat([dzz, dzr, da, da * r], 1)))

    first = [x for x in _rows_at(end - 1, t_total, gates, hprev, dseq) if x is not None]
    out = tf.while_loop(lambda t, *_: t >= start, back,
                        (end - 1, dh, *first, _stored(t_total, batch, width)))
    return out[-1].stack(), out[1]


# -- the layers (custom gradients around the loops) ------------------------------------------


def _lstm_layer(loops: dict[str, Any], sequences: bool):
    @tf.custom_gradient
    def run(xw, h0, c0, rk, start, end):
        # Rows outside [start, end) are never written: zeros (TensorArray semantics).
        acts, hprev, cprev, h, c = loops["lstm_forward"](xw, h0, c0, rk, start, end)
        seq = (_outputs_of(hprev, h, start, end, _inside(xw.shape[0], start, end))
               if sequences else tf.zeros([0]))

        def grad(dseq, dh, dc):
            dseq = _zeros_or(dseq, hprev) if sequences else None
            dz, dh0, dc0 = loops["lstm_backward"](acts, cprev, dseq, _zeros_or(dh, h),
                                                  _zeros_or(dc, c), rk, start, end)
            units = h0.shape[1]
            drk = tf.matmul(tf.reshape(hprev, [-1, units]),
                            tf.reshape(dz, [-1, 4 * units]), transpose_a=True)
            return dz, dh0, dc0, drk, None, None

        return (seq, h, c), grad

    return run


def _gru_layer(loops: dict[str, Any], sequences: bool):
    @tf.custom_gradient
    def run(xw, h0, rk, brec, start, end):
        gates, hprev, h = loops["gru_forward"](xw, h0, rk, brec, start, end)
        seq = (_outputs_of(hprev, h, start, end, _inside(xw.shape[0], start, end))
               if sequences else tf.zeros([0]))

        def grad(dseq, dh):
            dseq = _zeros_or(dseq, hprev) if sequences else None
            d_all, dh0 = loops["gru_backward"](gates, hprev, dseq, _zeros_or(dh, h), rk,
                                               start, end)
            units = h0.shape[1]
            dzz, dzr, da, dar = tf.split(d_all, 4, axis=2)
            dx = tf.concat([dzz, dzr, da], 2)
            dm = tf.reshape(tf.concat([dzz, dzr, dar], 2), [-1, 3 * units])
            drk = tf.matmul(tf.reshape(hprev, [-1, units]), dm, transpose_a=True)
            return dx, dh0, drk, tf.reduce_sum(dm, axis=0), None, None

        return (seq, h), grad

    return run


def _lstm_native_layer(kernels, sequences: bool):
    """The LSTM layer as core/native's ops: input projection, time loop and weight
    gradients in one op each way (a layer's inputs, not its projections)."""
    @tf.custom_gradient
    def run(feats, h0, c0, kernel, bias, rk, start, end):
        acts, hprev, cprev, h, c = kernels.lab_lstm_forward(feats, h0, c0, kernel, bias,
                                                            rk, start, end)
        seq = (_outputs_of(hprev, h, start, end, _inside(tf.shape(feats)[0], start, end))
               if sequences else tf.zeros([0]))

        def grad(dseq, dh, dc):
            dseq = _zeros_or(dseq, hprev) if sequences else tf.zeros([0])
            grads = kernels.lab_lstm_backward(feats, acts, hprev, cprev, dseq,
                                              _zeros_or(dh, h), _zeros_or(dc, c), kernel,
                                              rk, start, end)
            return (*grads, None, None)  # d(feats, h0, c0, kernel, bias, rk); no start/end

        return (seq, h, c), grad

    return run


def _conv_pool_native(kernels):
    """Conv1D('same', stride 1) + ReLU + MaxPooling1D(pool, stride pool) as core/native's
    ops: embedded codes (B, L, E) in, the pooled features time-major (T, B, C) out, one
    pass over the embeddings each way (TensorFlow's conv, ReLU, pool, their gradients and
    the transposes took a third of a CNN + LSTM epoch, BENCHMARKS.md section 1c)."""
    @tf.custom_gradient
    def run(e, kernel, bias, pad_left, pad_right, pool):
        out, which = kernels.lab_conv_pool(e, kernel, bias, pad_left, pad_right, pool)

        def grad(dout):
            de, dkernel, dbias = kernels.lab_conv_pool_grad(e, kernel, out, which, dout,
                                                            pad_left, pad_right, pool)
            return de, dkernel, dbias, None, None, None

        return out, grad

    return run
